// Validate cases against the spec's schemas with ajv (JSON Schema 2020-12, strict mode, formats
// asserted), for spec/tools/cross_validate.py to compare with python-jsonschema.
//
// Usage: node validate.mjs SCHEMA_DIR... < cases.json > results.json
// cases.json: [{"id": "...", "schema": "https://.../publish.schema.json#/pointer", "json": "<JSON text>"}]
// results.json: {"compile": {"file": "problem"}, "results": {"id": true | false | "problem"}}
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const ajv = new Ajv2020({ strict: true, allErrors: false });
addFormats(ajv);

const compile = {};
const ids = [];
for (const dir of process.argv.slice(2)) {
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".schema.json")).sort()) {
    const schema = JSON.parse(readFileSync(join(dir, name), "utf8"));
    try {
      ajv.addSchema(schema);
      ids.push([name, schema.$id]);
    } catch (error) {
      compile[name] = error.message;
    }
  }
}
for (const [name, id] of ids) {
  try {
    ajv.getSchema(id);
  } catch (error) {
    compile[name] = error.message;
  }
}

const cases = JSON.parse(readFileSync(0, "utf8"));
const validators = new Map();
const results = {};
for (const item of cases) {
  try {
    let validate = validators.get(item.schema);
    if (!validate) {
      validate = ajv.compile({ $ref: item.schema });
      validators.set(item.schema, validate);
    }
    results[item.id] = validate(JSON.parse(item.json));
  } catch (error) {
    results[item.id] = `cannot validate: ${error.message}`;
  }
}
process.stdout.write(JSON.stringify({ compile, results }) + "\n");
