// Drives the official MindConnect Node.js agent library through every agent operation that
// host_tests/southgate/test_nodejs.py checks, and writes what it sent to a JSON file so the
// Python side can compare it with what the server stored.
//
// Usage: node agent_flow.js PARAMS.json
//   PARAMS = {libDir, config, stateDir, out, assetId, capture?}
//   libDir   directory whose node_modules/ holds @mindconnect/mindconnect-nodejs
//   config   agentconfig.json (boarding configuration)
//   stateDir where the library keeps its agent state (<clientId>.json) and where the big file is made
//   out      result JSON: {ok, steps:{name:{ok, ms, error?}}, sent:{...}}
//   capture  also post a synthetic exchange "file" item (template only; no 3.24.2 API sends it)
//   mode     "rotation": only OnBoard, token, DSC, mappings and PostData, recording the
//            client secret the library holds after each (the server gives secrets < 25 h, so Node rotates)
//
// Each step runs even if an earlier one failed (where it can), so one run reports every gap.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const params = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const libDir = path.resolve(params.libDir);
const lib = require(path.join(libDir, "node_modules", "@mindconnect", "mindconnect-nodejs"));
const template = require(path.join(
  libDir, "node_modules", "@mindconnect", "mindconnect-nodejs", "dist", "src", "api", "mindconnect-template"));

const MiB = 1024 * 1024;
const config = JSON.parse(fs.readFileSync(params.config, "utf8"));
fs.mkdirSync(params.stateDir, { recursive: true });
const agent = new lib.MindConnectAgent(config, undefined, params.stateDir + path.sep);
const assetId = params.assetId;
const result = { ok: true, library: lib.MC_VERSION || null, steps: {}, sent: {} };
const sent = result.sent;
sent.agentId = agent.ClientId();
sent.assetId = assetId;

// Millisecond-precision timestamps a few minutes in the past (what a buffering agent sends).
const base = Math.floor(Date.now() / 1000) * 1000 - 10 * 60 * 1000;
const at = (s) => new Date(base + s * 1000);

const dsc = {
  configurationId: "CF-node-interop",
  dataSources: [
    {
      name: "DS-Environment",
      description: "sent by mindconnect-nodejs",
      dataPoints: [
        { id: "DP-Temperature", name: "Temperature", type: "DOUBLE", unit: "\u00b0C", description: "air" },
        { id: "DP-Count", name: "Count", type: "INT", unit: "" },
        { id: "DP-Total", name: "Total", type: "LONG", unit: "pcs" },
        { id: "DP-Running", name: "Running", type: "BOOLEAN", unit: "" },
        { id: "DP-Status", name: "Status", type: "STRING", unit: "" },
        { id: "DP-Note", name: "Note", type: "BIG_STRING", unit: "" },
        { id: "DP-LastService", name: "LastService", type: "TIMESTAMP", unit: "" },
      ],
    },
  ],
};

const mappings = dsc.dataSources[0].dataPoints.map((dp) => ({
  agentId: agent.ClientId(),
  dataPointId: dp.id,
  entityId: assetId,
  propertySetName: "Environment",
  propertyName: dp.name,
  keepMapping: false,
}));

const v = (dataPointId, value) => ({ dataPointId, qualityCode: "0", value });
const postDataTime = at(0);
const postDataValues = [
  v("DP-Temperature", "21.5"),
  v("DP-Count", "42"),
  v("DP-Total", "9007199254740993"),
  v("DP-Running", "true"),
  v("DP-Status", "OK \u00fcn\u00efc\u00f6de \u2713"),
  v("DP-Note", "x".repeat(300)),
  v("DP-LastService", at(-86400).toISOString()),
];
const bulk = [
  { timestamp: at(10).toISOString(), values: [v("DP-Temperature", "21.625"), v("DP-Count", "43")] },
  { timestamp: at(20).toISOString(), values: [v("DP-Temperature", "-3.25e-2"), v("DP-Running", "false")] },
  { timestamp: at(30).toISOString(), values: [v("DP-Temperature", "22"), v("DP-Status", "line1\nline2 \"quoted\"")] },
];

function flatten(timestamp, values) {
  return values.map((x) => ({ timestamp, dataPointId: x.dataPointId, value: x.value, qualityCode: x.qualityCode }));
}

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    result.steps[name] = { ok: true, ms: Date.now() - t0 };
    if (detail !== undefined) result.steps[name].detail = detail;
  } catch (err) {
    result.ok = false;
    result.steps[name] = { ok: false, ms: Date.now() - t0, error: String(err && err.message ? err.message : err) };
  }
}

function bigFile(file, size) {
  // Deterministic, non-repeating at part boundaries: byte i = (i * 31 + (i >> 20)) & 255.
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + (i >> 20)) & 255;
  fs.writeFileSync(file, buf);
  return buf;
}

const digest = (algo, buf) => crypto.createHash(algo).update(buf).digest("hex");

async function main() {
  await step("OnBoard", async () => {
    if (agent.IsOnBoarded()) return "already onboarded";
    await agent.OnBoard();
  });

  await step("GetAgentToken", async () => {
    const token = await agent.GetAgentToken();
    if (typeof token !== "string" || token.split(".").length !== 3) throw new Error("not a JWT: " + typeof token);
    const header = JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString());
    return { alg: header.alg };
  });

  await step("PutDataSourceConfiguration", async () => {
    const stored = await agent.PutDataSourceConfiguration(dsc);
    sent.dataSourceConfiguration = dsc;
    sent.storedDataSourceConfiguration = stored;
    if (!stored || stored.configurationId !== dsc.configurationId) {
      throw new Error("response is not the stored DSC: " + JSON.stringify(stored));
    }
    return { id: stored.id, eTag: stored.eTag };
  });

  await step("PutDataMappings", async () => {
    await agent.PutDataMappings(mappings);
    sent.mappings = mappings;
  });

  // Not in the acceptance list, but every real agent does these after configuring.
  await step("GetDataSourceConfiguration", async () => {
    const got = await agent.GetDataSourceConfiguration();
    if (!got || got.configurationId !== dsc.configurationId) throw new Error("got " + JSON.stringify(got));
  });
  await step("GetDataMappings", async () => {
    const got = await agent.GetDataMappings();
    if (!Array.isArray(got) || got.length !== mappings.length) {
      throw new Error("expected " + mappings.length + " mappings, got " + JSON.stringify(got));
    }
  });

  sent.timeseries = [];
  await step("PostData", async () => {
    const r = await agent.PostData(postDataValues, postDataTime);
    sent.exchangePayloads = sent.exchangePayloads || {};
    sent.exchangePayloads.postdata = [{ timestamp: postDataTime.toISOString(), values: postDataValues }];
    sent.timeseries.push(...flatten(postDataTime.toISOString(), postDataValues));
    return r;
  });

  await step("BulkPostData", async () => {
    const r = await agent.BulkPostData(bulk);
    sent.exchangePayloads = sent.exchangePayloads || {};
    sent.exchangePayloads.bulkpostdata = bulk;
    for (const tv of bulk) sent.timeseries.push(...flatten(tv.timestamp, tv.values));
    return r;
  });

  sent.events = [];
  await step("PostEvent", async () => {
    const event = {
      entityId: assetId,
      sourceType: "Event",
      sourceId: "application",
      source: "mcagent-node-interop",
      severity: 20,
      timestamp: at(40).toISOString(),
      description: "node interop event \u2713",
    };
    await agent.PostEvent(event);
    sent.events.push(event);
  });

  sent.files = [];
  const small = Buffer.from("hello from mindconnect-nodejs \u2713\n", "utf8");
  const smallFile = path.join(params.stateDir, "hello.txt");
  fs.writeFileSync(smallFile, small);
  const smallMeta = {
    entityId: agent.ClientId(), path: "interop/hello.txt", size: small.length,
    md5: digest("md5", small), sha256: digest("sha256", small),
    type: "text/plain", description: "small file from node", timestamp: at(50).toISOString(),
  };
  await step("UploadFile", async () => {
    const md5 = await agent.UploadFile(smallMeta.entityId, smallMeta.path, smallFile, {
      type: smallMeta.type, description: smallMeta.description, timestamp: at(50), retry: 1,
    });
    if (md5 !== smallMeta.md5) throw new Error("library md5 " + md5 + " != " + smallMeta.md5);
    sent.files.push(smallMeta);
  });

  // 5 MiB + 1 byte with the smallest chunk size the library allows (5 MiB): start, part 1, complete.
  // (With the default 8 MiB chunk size this file would go in one plain PUT.)
  const bigPath = path.join(params.stateDir, "big.bin");
  const big = bigFile(bigPath, 5 * MiB + 1);
  const bigMeta = {
    entityId: assetId, path: "interop/big.bin", size: big.length,
    md5: digest("md5", big), sha256: digest("sha256", big),
    type: "application/octet-stream", description: "chunked upload from node", timestamp: at(60).toISOString(),
  };
  await step("UploadFileChunked", async () => {
    const md5 = await agent.UploadFile(bigMeta.entityId, bigMeta.path, bigPath, {
      chunk: true, chunkSize: 5 * MiB, type: bigMeta.type, description: bigMeta.description,
      timestamp: at(60), retry: 1, parallelUploads: 1,
    });
    if (md5 !== bigMeta.md5) throw new Error("library md5 " + md5 + " != " + bigMeta.md5);
    sent.files.push(bigMeta);
  });

  // A second upload to the same path: the library now sends If-Match with the ETag it got back.
  const small2 = Buffer.from("hello again from mindconnect-nodejs\n", "utf8");
  fs.writeFileSync(smallFile, small2);
  await step("UploadFileAgain", async () => {
    await agent.UploadFile(smallMeta.entityId, smallMeta.path, smallFile, {
      type: smallMeta.type, description: smallMeta.description, timestamp: at(70), retry: 1,
    });
    Object.assign(smallMeta, {
      size: small2.length, md5: digest("md5", small2), sha256: digest("sha256", small2),
      timestamp: at(70).toISOString(),
    });
  });

  // A restarted agent (new object, same state dir): already onboarded, needs a new token, and re-puts its
  // DSC with If-Match = the eTag it stored. Last, because a DSC update drops mappings without keepMapping.
  await step("RestartPutDataSourceConfiguration", async () => {
    const restarted = new lib.MindConnectAgent(config, undefined, params.stateDir + path.sep);
    if (!restarted.IsOnBoarded()) throw new Error("state dir lost the onboarding");
    const before = sent.storedDataSourceConfiguration && sent.storedDataSourceConfiguration.eTag;
    const stored = await restarted.PutDataSourceConfiguration(dsc);
    if (String(stored.eTag) === String(before)) throw new Error("eTag did not change: " + stored.eTag);
    return { eTagBefore: before, eTagAfter: stored.eTag };
  });

  if (params.capture) {
    await step("ExchangeFileTemplate", async () => {
      // Synthetic: the library's own file item template posted through its own SendMessage.
      const payload = Buffer.from([0x00, 0x0d, 0x0a, 0x2d, 0x2d, 0xff, 0x0a]);
      const body = Buffer.concat([
        Buffer.from(template.fileTemplateHeader("blob.bin", at(80), "application/octet-stream")),
        payload,
        Buffer.from(template.fileTemplateFooter),
      ]);
      const token = await agent.GetAgentToken();
      const headers = {
        ...agent._multipartHeaders, Authorization: "Bearer " + token,
      };
      await agent.SendMessage("POST", config.content.baseUrl + "/api/mindconnect/v3/exchange", body, headers);
      sent.exchangeFile = {
        fileName: "blob.bin", creationDate: at(80).toISOString(), fileType: "application/octet-stream",
        hex: payload.toString("hex"),
      };
    });
  }
}

function storedSecret() {
  // The library's own state file (DefaultStorage): <stateDir>/<clientId>.json; hashed, never the secret itself.
  const state = JSON.parse(fs.readFileSync(path.join(params.stateDir, agent.ClientId() + ".json"), "utf8"));
  const resp = state.response || {};
  return {
    secret: resp.client_secret ? digest("sha256", Buffer.from(resp.client_secret)).slice(0, 16) : null,
    expiresAt: resp.client_secret_expires_at, recovery: (state.recovery || []).length,
  };
}

async function rotationMain() {
  sent.secrets = {};
  await step("OnBoard", async () => {
    await agent.OnBoard();
    sent.secrets.OnBoard = storedSecret();
  });
  await step("GetAgentToken", async () => {
    await agent.GetAgentToken();
    sent.secrets.GetAgentToken = storedSecret();
  });
  await step("PutDataSourceConfiguration", async () => {
    await agent.PutDataSourceConfiguration(dsc);
    sent.secrets.PutDataSourceConfiguration = storedSecret();
  });
  await step("PutDataMappings", async () => {
    await agent.PutDataMappings(mappings);
  });
  sent.timeseries = [];
  await step("PostData", async () => {
    await agent.PostData(postDataValues, postDataTime);
    sent.timeseries.push(...flatten(postDataTime.toISOString(), postDataValues));
    sent.secrets.PostData = storedSecret();
  });
}

(params.mode === "rotation" ? rotationMain() : main())
  .catch((err) => {
    result.ok = false;
    result.fatal = String(err && err.stack ? err.stack : err);
  })
  .finally(() => {
    fs.writeFileSync(params.out, JSON.stringify(result, null, 2));
    process.exitCode = result.ok ? 0 : 1;
  });
