// Node's cluster module for scripts/bench: node node-cluster.js PORT N
// The primary forks N workers and replaces one that dies.  SIGHUP: a
// rolling restart, one worker at a time (fork its replacement, and once it
// listens disconnect the old one), as a hand-written reload would do.
// SIGTERM: disconnect every worker (each closes its server and exits once
// its connections are gone), then exit.  Workers answer a short fixed body
// with an X-Pid header.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.argv[2] || 8080);
const n = Number(process.argv[3] || 2);

if (cluster.isPrimary) {
  let stopping = false;
  let reloading = false;
  const retiring = new Set();

  const fork = () => cluster.fork();
  for (let i = 0; i < n; i++) fork();

  cluster.on('exit', (worker) => {
    if (retiring.delete(worker.id)) return;
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
      return;
    }
    fork();
  });

  const retire = (old) => new Promise((resolve) => {
    retiring.add(old.id);
    old.once('exit', resolve);
    old.disconnect();
    setTimeout(() => old.process.kill('SIGKILL'), 30000).unref();
  });

  process.on('SIGHUP', async () => {
    if (reloading || stopping) return;
    reloading = true;
    for (const old of Object.values(cluster.workers)) {
      if (stopping) break;
      const fresh = fork();
      await new Promise((resolve) => fresh.once('listening', resolve));
      await retire(old);
    }
    reloading = false;
  });

  process.on('SIGTERM', () => {
    stopping = true;
    const workers = Object.values(cluster.workers);
    if (workers.length === 0) process.exit(0);
    for (const w of workers) w.disconnect();
    setTimeout(() => process.exit(0), 30000).unref();
  });
} else {
  const body = Buffer.from('hello from node\n');
  const pid = String(process.pid);
  http.createServer((req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': body.length,
      'X-Pid': pid,
    });
    res.end(body);
  }).listen(port, '127.0.0.1');
}
