// A real Yjs client (yjs + y-websocket WebsocketProvider) driven by JSON lines on stdin.
//
//   node client.mjs WS_URL ROOM
//
// Each stdin line is {"id": N, "cmd": NAME, ...args}; each reply is one stdout line
// {"id": N, "ok": true, ...} or {"id": N, "ok": false, "error": "..."}. Unprompted events
// ({"event": "status"|"synced"|"closed", ...}) are printed as they happen. Indices are
// UTF-16 code units, as in every Yjs editor binding. All waits are event-driven with a
// timeout; nothing polls or sleeps.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [url, room] = process.argv.slice(2)
if (!url || !room) {
  console.error('usage: node client.mjs WS_URL ROOM')
  process.exit(2)
}

const doc = new Y.Doc()
const ytext = doc.getText('code')
const provider = new WebsocketProvider(url, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true, // same-process clients must talk through the server only
  maxBackoffTime: 500
})
const sticky = new Map()

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
provider.on('status', ({ status }) => emit({ event: 'status', status }))
provider.on('sync', (synced) => { if (synced) emit({ event: 'synced' }) })
provider.on('closed', ({ code, reason }) => emit({ event: 'closed', code, reason }))

/** Resolve when `check()` is true, re-checking on every doc/awareness/provider event. */
const waitFor = (check, timeout, describe) => new Promise((resolve, reject) => {
  if (check()) return resolve()
  const cleanup = () => {
    clearTimeout(timer)
    doc.off('update', onEvent)
    provider.awareness.off('change', onEvent)
    provider.off('status', onEvent)
    provider.off('sync', onEvent)
  }
  const onEvent = () => { if (check()) { cleanup(); resolve() } }
  const timer = setTimeout(() => { cleanup(); reject(new Error(`timeout after ${timeout} ms: ${describe()}`)) }, timeout)
  doc.on('update', onEvent)
  provider.awareness.on('change', onEvent)
  provider.on('status', onEvent)
  provider.on('sync', onEvent)
})

const short = (s) => s.length > 200 ? `${s.slice(0, 100)}...(${s.length} units)...${s.slice(-100)}` : s

const awarenessStates = () => {
  const out = {}
  provider.awareness.getStates().forEach((state, clientID) => { out[clientID] = state })
  return out
}

const commands = {
  client_id: () => ({ clientId: doc.clientID }),
  text: () => ({ text: ytext.toString() }),
  length: () => ({ length: ytext.length }),
  insert: ({ index, text }) => { ytext.insert(index, text); return { length: ytext.length } },
  delete: ({ index, length }) => { ytext.delete(index, length); return { length: ytext.length } },
  // `repeat` builds large texts here instead of sending megabytes over stdin
  insert_repeat: ({ index, text, count }) => { ytext.insert(index, text.repeat(count)); return { length: ytext.length } },
  wait_text: async ({ text, timeout = 5000 }) => {
    await waitFor(() => ytext.toString() === text, timeout, () => `text is ${JSON.stringify(short(ytext.toString()))}`)
    return {}
  },
  wait_length: async ({ length, timeout = 5000 }) => {
    await waitFor(() => ytext.length === length, timeout, () => `length is ${ytext.length}`)
    return {}
  },
  wait_synced: async ({ timeout = 5000 }) => {
    await waitFor(() => provider.synced, timeout, () => `synced is ${provider.synced}`)
    return {}
  },
  wait_status: async ({ connected, timeout = 5000 }) => {
    await waitFor(() => provider.wsconnected === connected, timeout, () => `wsconnected is ${provider.wsconnected}`)
    return {}
  },
  set_awareness: ({ state }) => { provider.awareness.setLocalState(state); return {} },
  awareness: () => ({ states: awarenessStates() }),
  wait_awareness: async ({ clientId, present, timeout = 5000 }) => {
    const started = performance.now()
    await waitFor(() => provider.awareness.getStates().has(clientId) === present, timeout,
      () => `awareness states are ${JSON.stringify(awarenessStates())}`)
    return { elapsedMs: performance.now() - started }
  },
  // Cursors as Yjs relative positions, the way y-codemirror/y-monaco keep remote cursors.
  stick: ({ name, index, assoc = 0 }) => {
    sticky.set(name, Y.createRelativePositionFromTypeIndex(ytext, index, assoc))
    return {}
  },
  sticky_index: ({ name }) => {
    const abs = Y.createAbsolutePositionFromRelativePosition(sticky.get(name), doc)
    return { index: abs === null ? null : abs.index }
  },
  disconnect: () => { provider.disconnect(); return {} },
  connect: () => { provider.connect(); return {} },
  close: () => {
    provider.destroy()
    setImmediate(() => process.exit(0))
    return {}
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', async (line) => {
  let request
  try {
    request = JSON.parse(line)
  } catch (err) {
    emit({ id: null, ok: false, error: `bad JSON: ${err.message}` })
    return
  }
  const handler = commands[request.cmd]
  try {
    if (!handler) throw new Error(`unknown command ${request.cmd}`)
    emit({ id: request.id, ok: true, ...(await handler(request)) })
  } catch (err) {
    emit({ id: request.id, ok: false, error: err.message })
  }
})
rl.on('close', () => { provider.destroy(); process.exit(0) })
