// A forkpool -k exec worker in Node: listen on fd 3 (LISTEN_FDS=1).
//
//     forkpool -w 4 -b 127.0.0.1:8080 -k exec -- node hello.js
const http = require("http");

const server = http.createServer((req, res) => {
  res.end(`hello from worker ${process.env.FORKPOOL_WORKER_ID} pid ${process.pid}\n`);
});
server.listen({ fd: 3 });
// SIGTERM is forkpool's graceful stop: finish what is open, then exit.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
