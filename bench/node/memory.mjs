// Memory per loaded document in the reference server's terms: a Y.Doc that received
// EDITS single-character updates (random inserts/deletes, like typing), K docs at once.
//
//   node --expose-gc memory.mjs [DOCS] [EDITS]
import * as Y from 'yjs'

const docs = parseInt(process.argv[2] || '20')
const edits = parseInt(process.argv[3] || '10000')
let seed = 7
const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }

const rss = () => { global.gc(); global.gc(); return process.memoryUsage().rss }
const updatesFor = () => {
  const client = new Y.Doc()
  const text = client.getText('code')
  const updates = []
  client.on('update', u => updates.push(u))
  for (let i = 0; i < edits; i++) {
    if (text.length > 0 && random() < 0.2) text.delete(Math.floor(random() * text.length), 1)
    else text.insert(Math.floor(random() * (text.length + 1)), 'abcdefgh'[i % 8])
  }
  return updates
}
const streams = Array.from({ length: docs }, updatesFor)
const before = rss()
const server = streams.map(updates => {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, u)
  return doc
})
const after = rss()
const states = server.map(d => Y.encodeStateAsUpdate(d))
server.length = 0
const beforeReload = rss()
const reloaded = states.map(s => { const d = new Y.Doc(); Y.applyUpdate(d, s); return d })
const afterReload = rss()
process.stdout.write(JSON.stringify({
  docs, edits,
  perDocBytes: (after - before) / docs,
  perDocReloadedBytes: (afterReload - beforeReload) / docs,
  stateBytes: states[0].length,
  keep: reloaded.length
}) + '\n')
