// The players scenario on Omni.js 0.2.6 (the original, from npm): P players everyone may read
// and write, as omni-bench-server serves them. Prints `listening 127.0.0.1:<port>` and exits when
// its standard input closes.
"use strict";
const http = require("http");
// Omni.listen binds every interface; the benchmark keeps to 127.0.0.1.
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (port, ...rest) {
  return listen.call(this, port, "127.0.0.1", ...rest);
};
// socket.io 0.9 (2013) reads `process.EventEmitter`, which Node removed; give it back.
process.EventEmitter = require("events").EventEmitter;
const Omni = require("omni");

const port = Number(process.argv[2] || 0) || 3900;
const models = Number(process.argv[3] || 100);

const Player = Omni.Model.extend({
  defaults: { name: "", x: 0, y: 0, seq: 0, ts: 0 },
  readPermission: function () { return true; },
  writePermission: function () { return true; },
});
const Players = Omni.Collection.extend({
  model: Player,
  createPermission: function () { return true; },
  destroyPermission: function () { return true; },
});

const list = [];
for (let i = 0; i < models; i++) list.push(new Player({ name: "p" + i, x: i % 640, y: Math.floor(i / 640) }));
const players = new Players(list);
Omni.listen(port, { players: players }, {}, { static: false });
console.log("listening 127.0.0.1:" + port);
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
