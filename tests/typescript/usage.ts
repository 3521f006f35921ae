// An app written against the browser client's declarations, as a frontend would use them: `tsc` must
// accept it, and the lines marked @ts-expect-error must stay errors (the declarations are not `any`).
import {
  DocjobsError, DocjobsJob, submit, watchJob, watchSession,
  type Accepted, type DocjobsEvent, type SessionWatch,
} from "../../services/gateway/static/client/docjobs.js";

const gateway = "https://docjobs.example.com";

export async function chat(token: string): Promise<void> {
  let created: Accepted;
  try {
    created = await submit({ documentType: "spreadsheet", title: "Sales", code: "...", sessionId: "s-1", userId: 123,
                             priority: 0 }, { gateway, token, idempotencyKey: "message-1" });
  } catch (err) {
    if (err instanceof DocjobsError && err.status === 422) console.log(err.field, err.message, err.retryable);
    throw err;
  }
  const job = watchJob({ gateway, eventsUrl: created.eventsUrl }, {
    onEvent(event: DocjobsEvent) {
      if (event.type === "job-complete" && event.data.result) console.log(event.data.result.downloadUrl);
      if (event.type === "progress") console.log(event.data.progress);
    },
    onError: (error) => console.log(error.code),
  });
  job.close();

  const session: SessionWatch = watchSession({ gateway, token, sessionId: "s-1" }, {
    onJob(jobId) {
      const element = document.createElement("docjobs-job");
      const typed: DocjobsJob = element;
      typed.setAttribute("gateway", gateway);
      typed.setAttribute("job-id", jobId);
      typed.session = session;
      typed.addEventListener("docjobs-event", (e) => console.log(e.detail.jobId, e.detail.data.status));
      document.body.append(typed);
    },
  });
  console.log(session.jobs(), session.lastEventId);
  const unsubscribe = session.subscribe("job", (event) => console.log(event.id));
  unsubscribe();
  watchSession({ gateway, sessionEventsUrl: created.sessionEventsUrl ?? "" }).close();
  // Fresh credentials when a stream's have expired: a signed URL from the page's backend, or a token.
  watchSession({
    gateway, sessionEventsUrl: created.sessionEventsUrl ?? "",
    refreshUrl: async () => (await (await fetch("/my-backend/docjobs-session-url")).json()).url as string,
  }).close();
  watchJob({ gateway, jobId: created.jobId, token, refreshToken: () => null }).close();

  // @ts-expect-error: documentType is one of the four types
  await submit({ documentType: "video" });
  // @ts-expect-error: a job is followed by its signed URL, or by its id with a token
  watchJob({ gateway, jobId: "x" });
  // @ts-expect-error: statuses are named
  const status: DocjobsJob["status"] = "done";
  console.log(status);
}
