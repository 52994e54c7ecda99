// Reads back through the official Node.js SDK's application clients, the way an Insights Hub app does:
// TokenManagerAuth with app credentials, TimeSeriesClient (range, bounds, latest value, select, and
// GetTimeSeriesBulkStyle followed page by page over the Link header), TimeSeriesBulkClient, IotFileClient,
// an IoT TS Bulk import job and EventManagementClient (a page of events, one event by id). host_tests/southgate/test_nodejs_read.py checks what it got.
//
// Usage: node read_flow.js PARAMS.json
//   PARAMS = {libDir, baseUrl, app: {clientId, clientSecret, tenant, appName, appVersion}, assetId,
//             aspect, times: [ISO, ...] (the stored records, oldest first), importDay: [{_time, ...}],
//             eventEntity (the asset the agent's events are on), out}
"use strict";

const fs = require("fs");
const path = require("path");

const params = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const lib = require(path.join(path.resolve(params.libDir), "node_modules", "@mindconnect", "mindconnect-nodejs"));
const result = { ok: true, steps: {} };
const app = params.app;
const asset = params.assetId;
const aspect = params.aspect;
const times = params.times;

async function step(name, fn) {
  const t0 = Date.now();
  try {
    result.steps[name] = { ok: true, detail: await fn(), ms: Date.now() - t0 };
  } catch (err) {
    result.ok = false;
    result.steps[name] = { ok: false, ms: Date.now() - t0, error: String(err && err.message ? err.message : err) };
  }
}

async function main() {
  const basic = "Basic " + Buffer.from(`${app.clientId}:${app.clientSecret}`).toString("base64");
  const auth = new lib.TokenManagerAuth(params.baseUrl, basic, app.tenant, app.tenant, app.appName, app.appVersion);
  const ts = new lib.TimeSeriesClient(auth);
  const bulk = new lib.TimeSeriesBulkClient(auth);
  const files = new lib.IotFileClient(auth);
  const last = times[times.length - 1];

  await step("Token", async () => (await auth.GetToken()).length > 0);
  await step("GetTimeSeriesRange", async () =>
    (await ts.GetTimeSeries(asset, aspect, { from: new Date(times[0]), to: new Date(last) })).map((r) => r._time));
  await step("GetTimeSeriesLatest", async () => await ts.GetTimeSeries(asset, aspect));
  await step("GetTimeSeriesLatestValue", async () => await ts.GetTimeSeries(asset, aspect, { latestValue: true }));
  await step("GetTimeSeriesSelect", async () =>
    await ts.GetTimeSeries(asset, aspect, { from: new Date(Date.parse(times[0]) - 1), to: new Date(last), select: "count" }));
  await step("GetTimeSeriesBulkStyle", async () => {
    const pages = [];
    let page = await ts.GetTimeSeriesBulkStyle(asset, aspect, {
      from: new Date(Date.parse(times[0]) - 1), to: new Date(last), limit: 2,
    });
    pages.push(page.records.map((r) => r.count));
    while (page.nextRecord && pages.length < 50) {
      page = await ts.GetNextRecordsBulkStyle(page.nextRecord);
      pages.push(page.records.map((r) => r.count));
    }
    return pages;
  });
  await step("TimeSeriesBulkGetTimeSeries", async () => {
    const answer = await bulk.GetTimeSeries(asset, aspect, new Date(Date.parse(times[0]) - 1), new Date(last));
    return answer.records.map((r) => r.count);
  });
  const day = params.importDay;
  await step("PutFile", async () => {
    await files.PutFile(asset, "import/day.json", Buffer.from(JSON.stringify(day)), { type: "application/json" });
    return true;
  });
  await step("ImportJob", async () => {
    const job = await bulk.PostImportJob({
      data: [{
        entity: asset,
        propertySetName: aspect,
        timeseriesFiles: [{ filePath: "import/day.json", from: day[0]._time, to: day[day.length - 1]._time }],
      }],
    });
    let status = job;
    for (let i = 0; i < 100 && !["SUCCESS", "ERROR"].includes(status.status); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = await bulk.GetJobStatus(job.id);
    }
    return { submitted: job.status, status: status.status, message: status.message };
  });
  const events = new lib.EventManagementClient(auth);
  let newestId = null;
  await step("GetEvents", async () => {
    const answer = await events.GetEvents({ size: 1, filter: JSON.stringify({ entityId: params.eventEntity }) });
    const list = (answer._embedded && answer._embedded.events) || [];
    newestId = list.length ? list[0].id : null;
    return { page: answer.page, descriptions: list.map((e) => e.description), severities: list.map((e) => e.severity) };
  });
  await step("GetEvent", async () => await events.GetEvent(newestId));
  await step("ImportedReadable", async () => {
    const from = new Date(Date.parse(day[0]._time) - 1);
    const answer = await bulk.GetTimeSeries(asset, aspect, from, new Date(day[day.length - 1]._time));
    return answer.records;
  });
}

main()
  .catch((err) => {
    result.ok = false;
    result.fatal = String(err && err.stack ? err.stack : err);
  })
  .finally(() => {
    fs.writeFileSync(params.out, JSON.stringify(result, null, 2));
    process.exitCode = result.ok ? 0 : 1;
  });
