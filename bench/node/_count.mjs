import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
const [url, n] = [process.argv[2], parseInt(process.argv[3])]
const clients = []
let msgs = 0, bytes = 0, maxb = 0
const room = 'c' + Date.now()
class CountingWS extends WebSocket { constructor (...a) { super(...a); this.on('message', d => { msgs++; bytes += d.byteLength || d.length; maxb = Math.max(maxb, d.byteLength || d.length) }) } }
for (let i = 0; i < n; i++) { const doc = new Y.Doc(); const p = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: CountingWS, disableBc: true }); clients.push({ doc, text: doc.getText('code'), p }) }
await new Promise(r => setTimeout(r, 2000))
msgs = 0; bytes = 0
const t0 = performance.now()
const iv = setInterval(() => { for (const c of clients) c.text.insert(Math.floor(Math.random() * (c.text.length + 1)), 'x') }, 200)
await new Promise(r => setTimeout(r, 3000))
clearInterval(iv)
await new Promise(r => setTimeout(r, 1000))
console.log(JSON.stringify({ msgs, bytes, maxb, len: clients.map(c => c.text.length).slice(0, 5) }))
process.exit(0)
