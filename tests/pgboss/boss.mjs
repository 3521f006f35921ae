// A Node service's side of the pg-boss bridge, for the tests (tests/test_pgboss.py): pg-boss as an app
// uses it, one command per run. Prints one JSON value on stdout.
//
//   node boss.mjs setup  '{"queue": "docjobs", "options": {...}}'   install the schema, create the queue
//   node boss.mjs send   '{"queue": "docjobs", "data": {...}, "options": {...}}'   -> the job id
//   node boss.mjs insert '{"queue": "docjobs", "data": [{...}, ...]}'   several at once -> their ids
//   node boss.mjs get    '{"queue": "docjobs", "id": "..."}'        -> the job (state, output, ...) or null
//   node boss.mjs cancel '{"queue": "docjobs", "id": "..."}'
//   node boss.mjs fail   '{"queue": "docjobs", "id": "..."}'        as pg-boss's expiry does: back to retry
//
// DATABASE_URL names the database; PGBOSS_SCHEMA the schema (default pgboss).
import { PgBoss } from 'pg-boss'

const [command, raw] = process.argv.slice(2)
const args = JSON.parse(raw ?? '{}')
// Only what the command needs: no maintenance or cron of its own, which would race the test's timing.
const boss = new PgBoss({
  connectionString: process.env.DATABASE_URL,
  schema: process.env.PGBOSS_SCHEMA ?? 'pgboss',
  supervise: false,
  schedule: false
})
boss.on('error', error => console.error(error))
await boss.start()
let result = null
try {
  if (command === 'setup') {
    await boss.createQueue(args.queue, args.options ?? {})
    result = await boss.schemaVersion()
  } else if (command === 'send') {
    result = await boss.send(args.queue, args.data, args.options ?? {})
  } else if (command === 'insert') {
    result = await boss.insert(args.queue, args.data.map(data => ({ data })), { returnId: true })
  } else if (command === 'get') {
    const [job] = await boss.findJobs(args.queue, { id: args.id })
    result = job ?? null
  } else if (command === 'cancel') {
    result = await boss.cancel(args.queue, args.id)
  } else if (command === 'fail') {
    result = await boss.fail(args.queue, args.id, { message: 'given back' })
  } else {
    throw new Error(`unknown command ${command}`)
  }
} finally {
  await boss.stop({ graceful: false, close: true })
}
console.log(JSON.stringify(result))
