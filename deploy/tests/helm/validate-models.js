// Validates rendered manifests against the schemas of the npm packages
// kubernetes-models (Kubernetes objects) and @kubernetes-models/prometheus-operator
// (ServiceMonitor, PodMonitor). Run by deploy/tests/helm.rs:
//
//   node validate-models.js NODE_DIR FILE...
//
// NODE_DIR holds node_modules (scripts/install-k8s-tools.sh: .k8s-tools/node).
// Prints one line per object checked ("ok Kind/name file"), one per problem
// ("error Kind/name file: ..."), and exits 1 if there was any problem.
//
// The prometheus-operator CRD schemas, like every structural CRD schema, let
// unknown fields through (the API server prunes them silently), so a misspelt
// field (`scrapTimeout`) would pass their validation. For those kinds every
// field name is also checked against the names their schema knows (those
// of the kind's compiled schema and of the schemas it requires, such as
// ObjectMeta): a name-level check, not a position-level one, but it catches
// misspellings.
"use strict";

const fs = require("fs");
const path = require("path");

const [nodeDir, ...files] = process.argv.slice(2);
if (!nodeDir || files.length === 0) {
  console.error("usage: node validate-models.js NODE_DIR FILE...");
  process.exit(2);
}
const modules = path.resolve(nodeDir, "node_modules");
const load = (name) => require(path.join(modules, name));
const YAML = load("yaml");

// Where each apiVersion's models are.
function modelPath(apiVersion, kind) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const CRD_KINDS = new Set(["ServiceMonitor", "PodMonitor"]);
// Maps whose keys are data, not field names.
const FREE_FORM = new Set(["labels", "annotations", "matchLabels", "params"]);

// Every property name a compiled schema module (and those it requires) validates.
function knownNames(file, seen = new Set(), names = new Set()) {
  if (seen.has(file)) return names;
  seen.add(file);
  const text = fs.readFileSync(file, "utf8");
  for (const m of text.matchAll(/instancePath\+"\/([A-Za-z0-9_$.-]+)"/g)) names.add(m[1]);
  for (const m of text.matchAll(/missingProperty:"([A-Za-z0-9_$.-]+)"/g)) names.add(m[1]);
  for (const m of text.matchAll(/require\("(@kubernetes-models\/[^"]+\/_schemas\/[^"]+)"\)/g)) {
    knownNames(require.resolve(path.join(modules, m[1])), seen, names);
  }
  return names;
}

function unknownFields(value, names, where, out) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => unknownFields(v, names, `${where}[${i}]`, out));
  } else if (value !== null && typeof value === "object") {
    for (const [key, v] of Object.entries(value)) {
      if (!names.has(key)) out.push(`${where}.${key}: unknown field`);
      if (!FREE_FORM.has(key)) unknownFields(v, names, `${where}.${key}`, out);
    }
  }
}

let failed = false;
for (const file of files) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.log(`error ${file}: YAML: ${doc.errors.map(String).join("; ")}`);
      failed = true;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    const id = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
    const modelName = modelPath(obj.apiVersion, obj.kind);
    let Model;
    try {
      Model = load(modelName)[obj.kind];
    } catch (e) {
      console.log(`error ${id} ${file}: no model ${modelName} (${e.code || e.message})`);
      failed = true;
      continue;
    }
    const problems = [];
    try {
      new Model(obj).validate();
    } catch (e) {
      problems.push(e.message);
    }
    if (CRD_KINDS.has(obj.kind)) {
      const schemaFile = require.resolve(
        path.join(modules, `@kubernetes-models/prometheus-operator/_schemas/MonitoringCoreosComV1${obj.kind}`),
      );
      unknownFields(obj, knownNames(schemaFile), "", problems);
    }
    if (problems.length > 0) {
      failed = true;
      for (const p of problems) console.log(`error ${id} ${file}: ${p}`);
    } else {
      console.log(`ok ${id} ${file}`);
    }
  }
}
process.exit(failed ? 1 : 0);
