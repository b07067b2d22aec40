// A peer of sessiond in the load benchmark: express with express-session, its memory store or
// connect-redis, answering the three operations of `bench/run` (see ../tower/src/main.rs):
// GET /api/sessions reads the session, PATCH sets one key and saves it, POST creates a session
// holding what sessiond's demo account derives on create plus the posted values (201).
// The session cookie is named vtex_session so the same load generator drives it.
//
// Usage: node server.js memory|redis://HOST:PORT [PORT]; prints "listening on http://ADDR".
"use strict";
const express = require("express");
const session = require("express-session");

const CREATED = {
  account: {
    accountName: { value: "demo" },
    id: { value: "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51", keepAlive: true },
  },
  store: {
    channel: { value: "1" },
    channelPrivacy: { value: "public" },
    countryCode: { value: "BRA" },
    cultureInfo: { value: "pt-BR" },
    currencyCode: { value: "BRL" },
    currencySymbol: { value: "R$" },
  },
};

function merge(namespaces, body) {
  if (typeof body !== "object" || body === null) return false;
  for (const [name, keys] of Object.entries(body)) {
    if (typeof keys !== "object" || keys === null) return false;
    namespaces[name] = Object.assign(namespaces[name] || {}, keys);
  }
  return true;
}

async function main() {
  const [kind = "memory", port = "0"] = process.argv.slice(2);
  const options = {
    name: "vtex_session",
    secret: "bench-peer-secret",
    resave: false,
    saveUninitialized: false,
  };
  if (kind !== "memory") {
    const { createClient } = require("redis");
    const { RedisStore } = require("connect-redis");
    const client = createClient({ url: kind });
    await client.connect();
    options.store = new RedisStore({ client });
  }
  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  app.use(express.json());
  app.use(session(options));
  app.get("/api/sessions", (req, res) => {
    if (!req.session.namespaces) return res.status(404).json({ type: "NotFound" });
    res.json({ id: req.sessionID, namespaces: req.session.namespaces });
  });
  app.patch("/api/sessions", (req, res) => {
    if (!req.session.namespaces) return res.status(404).json({ type: "NotFound" });
    if (!merge(req.session.namespaces, req.body)) return res.status(400).json({ type: "BadRequest" });
    res.json({ id: req.sessionID, namespaces: req.session.namespaces });
  });
  app.post("/api/sessions", (req, res) => {
    const namespaces = structuredClone(CREATED);
    if (!merge(namespaces, req.body)) return res.status(400).json({ type: "BadRequest" });
    req.session.namespaces = namespaces;
    res.status(201).json({ id: req.sessionID, namespaces });
  });
  const server = app.listen(Number(port), "127.0.0.1", () => {
    const { address, port } = server.address();
    console.log(`listening on http://${address}:${port}`);
  });
  server.on("connection", (socket) => socket.setNoDelay(true));
  server.keepAliveTimeout = 75000;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
