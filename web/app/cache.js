// MessageCache keeps a user's recent messages in IndexedDB, so a page shows
// a conversation at once, before openim/getmsg answers, and after a reload.
// It is a cache: the server stays the truth (history, recalls, edits).
//
//   const cache = await MessageCache.open('alice')  // null without IndexedDB
//   await cache.put([{MsgKey, From_Account, To_Account, MsgTimeStamp, MsgBody, …}], 'alice')
//   const msgs = await cache.recent('alice', 'bob', 50)  // oldest first

const STORE = 'msgs'
const KEEP = 7 * 24 * 3600 // seconds: Duet's default retention

function req (r) {
  return new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error) })
}

function done (tx) {
  return new Promise((resolve, reject) => { tx.oncomplete = () => resolve(); tx.onerror = tx.onabort = () => reject(tx.error) })
}

export class MessageCache {
  constructor (db) { this.db = db }

  static async open (user, idb = globalThis.indexedDB) {
    if (!idb) return null
    const r = idb.open(`duet:${user}`, 1)
    r.onupgradeneeded = () => {
      const s = r.result.createObjectStore(STORE, { keyPath: 'MsgKey' })
      s.createIndex('peer_time', ['peer', 'MsgTimeStamp'])
      s.createIndex('time', 'MsgTimeStamp')
    }
    const c = new MessageCache(await req(r))
    c.expire(Math.floor(Date.now() / 1000) - KEEP).catch(() => {})
    return c
  }

  // put stores stored messages (not local placeholders) of user me.
  async put (msgs, me) {
    const tx = this.db.transaction(STORE, 'readwrite')
    const s = tx.objectStore(STORE)
    for (const m of msgs) {
      if (!m.MsgKey || m.MsgKey.startsWith('local-')) continue
      s.put({
        MsgKey: m.MsgKey, From_Account: m.From_Account, To_Account: m.To_Account, MsgTimeStamp: m.MsgTimeStamp,
        MsgBody: m.MsgBody, Seq: m.Seq, recalled: !!m.recalled,
        peer: m.From_Account === me ? m.To_Account : m.From_Account
      })
    }
    return done(tx)
  }

  // update changes fields of a cached message (a recall, an edit).
  async update (key, patch) {
    const tx = this.db.transaction(STORE, 'readwrite')
    const s = tx.objectStore(STORE)
    const m = await req(s.get(key))
    if (m) s.put({ ...m, ...patch })
    return done(tx)
  }

  // recent answers the newest n messages with peer, oldest first.
  async recent (peer, n = 50) {
    const tx = this.db.transaction(STORE)
    const range = IDBKeyRange.bound([peer, -Infinity], [peer, Infinity])
    const out = []
    await new Promise((resolve, reject) => {
      const cur = tx.objectStore(STORE).index('peer_time').openCursor(range, 'prev')
      cur.onsuccess = () => {
        const c = cur.result
        if (!c || out.length >= n) return resolve()
        out.push(c.value)
        c.continue()
      }
      cur.onerror = () => reject(cur.error)
    })
    return out.reverse()
  }

  async expire (before) {
    const tx = this.db.transaction(STORE, 'readwrite')
    const cur = tx.objectStore(STORE).index('time').openCursor(IDBKeyRange.upperBound(before, true))
    cur.onsuccess = () => { const c = cur.result; if (c) { c.delete(); c.continue() } }
    return done(tx)
  }

  close () { this.db.close() }

  static remove (user, idb = globalThis.indexedDB) {
    return idb ? req(idb.deleteDatabase(`duet:${user}`)).catch(() => {}) : Promise.resolve()
  }
}
