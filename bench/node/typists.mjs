// Load generator for bench_yjs.py: N real y-websocket clients in one room.
//
//   node typists.mjs WS_URL ROOM TYPISTS SAMPLES [CHARS_PER_SECOND]
//
// Client 0 (A) types probe characters one at a time; client 1 (B) records when each probe
// arrives (A's clock reaching the probe's clock in B's state vector). Every other client
// (and B) types at CHARS_PER_SECOND at random positions, so the server and every client
// carry the background load. Prints one JSON line: latencies in milliseconds.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [url, room, typistsArg, samplesArg, cpsArg] = process.argv.slice(2)
const typists = parseInt(typistsArg)
const samples = parseInt(samplesArg)
const cps = parseFloat(cpsArg || '5')
const PROBE_GAP_MS = 10

const clients = []
for (let i = 0; i < typists; i++) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  clients.push({ doc, provider, text: doc.getText('code') })
}
await Promise.all(clients.map(({ provider }) => new Promise(resolve => {
  if (provider.synced) resolve()
  else provider.once('sync', resolve)
})))

const [a, b] = clients
let seed = 42
const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
const timers = []
for (const c of clients.slice(1)) {
  const jitter = random() * 1000 / cps
  timers.push(setTimeout(() => {
    timers.push(setInterval(() => {
      c.text.insert(Math.floor(random() * (c.text.length + 1)), 'x')
    }, 1000 / cps))
  }, jitter))
}

// Warm up: let every client see some traffic before measuring.
await new Promise(resolve => setTimeout(resolve, 500))

const latencies = []
let incomplete = false
await new Promise(resolve => {
  // A run that stops making progress reports what it has instead of hanging the benchmark.
  setTimeout(() => { incomplete = true; resolve() }, 60000 + samples * 20)
  let target = -1
  let started = 0
  const probe = () => {
    started = performance.now()
    a.text.insert(0, 'p')
    target = Y.getState(a.doc.store, a.doc.clientID)
    check()
  }
  const check = () => {
    if (target >= 0 && Y.getState(b.doc.store, a.doc.clientID) >= target) {
      latencies.push(performance.now() - started)
      target = -1
      if (latencies.length >= samples) resolve()
      else setTimeout(probe, PROBE_GAP_MS)
    }
  }
  b.doc.on('update', check)
  probe()
})

for (const t of timers) { clearTimeout(t); clearInterval(t) }
latencies.sort((x, y) => x - y)
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]
process.stdout.write(JSON.stringify({
  typists, samples: latencies.length, incomplete, median: pct(0.5) ?? null, p99: pct(0.99) ?? null, max: latencies[latencies.length - 1] ?? null
}) + '\n')
for (const { provider } of clients) provider.destroy()
setTimeout(() => process.exit(0), 100)
