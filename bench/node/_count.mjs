import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
const [url, n] = [process.argv[2], parseInt(process.argv[3])]
const clients = []
let msgs = 0, kinds = {}
const room = 'c' + Date.now()
class CountingWS extends WebSocket { constructor (...a) { super(...a); this.on('message', d => { msgs++; const b = new Uint8Array(d); const k = b[0] + ':' + b[1]; kinds[k] = (kinds[k] || 0) + 1 }) } }
let closes = 0
for (let i = 0; i < n; i++) { const doc = new Y.Doc(); const p = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: CountingWS, disableBc: true }); p.on('connection-close', () => closes++); clients.push({ doc, text: doc.getText('code'), p }) }
await new Promise(r => setTimeout(r, 2000))
msgs = 0; kinds = {}
const iv = setInterval(() => { for (const c of clients.slice(0, 10)) c.text.insert(0, 'x') }, 200)
await new Promise(r => setTimeout(r, 3000))
clearInterval(iv)
await new Promise(r => setTimeout(r, 1000))
console.log(JSON.stringify({ msgs, kinds, closes, len: clients.map(c => c.text.length).slice(0, 5) }))
process.exit(0)
