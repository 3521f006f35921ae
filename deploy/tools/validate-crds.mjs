// Validates custom resources (KEDA, CloudNativePG, Prometheus operator) against the schemas of their
// CRDs, as published in the @kubernetes-models packages pinned in package.json.
// Input on stdin: a JSON array of objects. Output on stdout: a JSON array, one entry per object,
// {kind, name, error}, error null when the object is valid. Exit status 0 unless the input is unreadable.
import { readFileSync } from "node:fs";

const PACKAGES = {
  "keda.sh": "@kubernetes-models/keda",
  "postgresql.cnpg.io": "@kubernetes-models/cloudnative-pg",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

async function validate(object) {
  const [group, version] = String(object.apiVersion || "").split("/");
  const pkg = PACKAGES[group];
  if (!pkg || !version) return `no schema for ${object.apiVersion} ${object.kind}`;
  let module;
  try {
    module = await import(`${pkg}/${group}/${version}/${object.kind}`);
  } catch {
    return `no schema for ${object.apiVersion} ${object.kind}`;
  }
  try {
    new module[object.kind](object).validate();
    return null;
  } catch (error) {
    return String(error && error.message ? error.message : error);
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
  results.push({ kind: object.kind, name: object.metadata?.name ?? null, error: await validate(object) });
}
process.stdout.write(JSON.stringify(results));
