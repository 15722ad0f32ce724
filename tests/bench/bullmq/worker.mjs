// One round of `scripts/bench worker --peers` (run by tests/bench/peers.py): N no-op jobs queued
// with addBulk, then one BullMQ Worker drains them. Prints one JSON line:
// {"jobs", "seconds", "cpu_seconds", "commands"}.
// Usage: node worker.mjs REDIS_URL QUEUE_NAME JOBS CONCURRENCY KEY_PREFIX
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const [url, name, jobsArg, concurrencyArg, prefix] = process.argv.slice(2);
const jobs = Number(jobsArg);
const concurrency = Number(concurrencyArg);
const connection = { url };
// BullMQ keeps every completed job by default; a fast queue sets removeOnComplete: true, which
// keeps no result, as stock RQ's result_ttl=0 in the same benchmark does.
const opts = { removeOnComplete: true };

const queue = new Queue(name, { connection, prefix });
// Batches of 1000, as the RQ variants enqueue, so no single MULTI holds every job.
for (let start = 0; start < jobs; start += 1000) {
  const batch = Array.from({ length: Math.min(1000, jobs - start) }, () => ({
    name: "noop",
    data: {},
    opts,
  }));
  await queue.addBulk(batch);
}

const worker = new Worker(name, async () => {}, { connection, prefix, concurrency, autorun: false });
let completed = 0;
const drained = new Promise((resolve, reject) => {
  worker.on("completed", () => {
    completed += 1;
    if (completed === jobs) resolve();
  });
  worker.on("failed", (job, error) => reject(error));
  worker.on("error", reject);
});
// BullMQ 6 keeps its Redis client behind its backend, so INFO goes over a connection of its own.
const stats = new IORedis(url);
const commands = async () => {
  const info = await stats.info("stats");
  return Number(/total_commands_processed:(\d+)/.exec(info)[1]);
};

// Start-up (Node, module loading, the Redis connection) is left out, as the RQ variants subtract
// an idle burst; the clock starts when the ready worker starts fetching.
await worker.waitUntilReady();
const commandsBefore = await commands();
const cpuBefore = process.cpuUsage();
const began = performance.now();
const running = worker.run();
await drained;
const seconds = (performance.now() - began) / 1000;
const cpu = process.cpuUsage(cpuBefore);
const commandsAfter = await commands();

await worker.close();
await running;
// Removes every key of the queue, so the next round starts on an empty Redis.
await queue.obliterate({ force: true });
await queue.close();
await stats.quit();
console.log(
  JSON.stringify({
    jobs,
    seconds,
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    commands: commandsAfter - commandsBefore,
  }),
);
