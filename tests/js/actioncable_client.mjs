// A real `@rails/actioncable` consumer (with `ws` as its WebSocket), driven by a test over its
// standard streams: one JSON command a line in, one JSON observation a line out.
//
//   node actioncable_client.mjs ws://host/api/v1/cable?token=...
//
// In:  {"op":"subscribe","name":N,"params":{channel,...}}  {"op":"perform","name":N,"action":A,"data":{...}}
//      {"op":"unsubscribe","name":N}  {"op":"state"}  {"op":"quit"}
// Out: {"event":"connected"|"rejected"|"disconnected","name":N}  {"event":"received","name":N,"data":...}
//      {"event":"opened","protocol":P}  {"event":"closed","monitor_running":bool,"reconnect_allowed":bool}
//      {"event":"state","open":bool,"monitor_running":bool}

import readline from "node:readline";
import WebSocket from "ws";
import { adapters, createConsumer, Connection } from "@rails/actioncable";

// Node has no window: the connection monitor listens for page visibility, which never changes here.
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
adapters.WebSocket = WebSocket;

const out = (observation) => process.stdout.write(JSON.stringify(observation) + "\n");
const consumer = createConsumer(process.argv[2]);
const connection = consumer.connection;

// Observe the connection's own handlers without changing what they do.
const events = Connection.prototype.events;
connection.events = {
  ...events,
  open() {
    out({ event: "opened", protocol: connection.getProtocol() });
    return events.open.call(this);
  },
  message(event) {
    const { type, reconnect } = JSON.parse(event.data);
    if (type === "disconnect") {
      connection.lastDisconnectReconnect = reconnect;
    }
    return events.message.call(this, event);
  },
  close(event) {
    const result = events.close.call(this, event);
    out({
      event: "closed",
      monitor_running: connection.monitor.isRunning(),
      reconnect_allowed: connection.lastDisconnectReconnect !== false,
    });
    return result;
  },
};

const subscriptions = new Map();

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  switch (command.op) {
    case "subscribe": {
      const name = command.name;
      const subscription = consumer.subscriptions.create(command.params, {
        connected: () => out({ event: "connected", name }),
        disconnected: () => out({ event: "disconnected", name }),
        rejected: () => out({ event: "rejected", name }),
        received: (data) => out({ event: "received", name, data }),
      });
      subscriptions.set(name, subscription);
      break;
    }
    case "perform":
      subscriptions.get(command.name).perform(command.action, command.data ?? {});
      break;
    case "unsubscribe":
      subscriptions.get(command.name).unsubscribe();
      subscriptions.delete(command.name);
      break;
    case "state":
      out({ event: "state", open: connection.isOpen(), monitor_running: connection.monitor.isRunning() });
      break;
    case "quit":
      consumer.disconnect();
      process.exit(0);
  }
});
