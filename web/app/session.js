// Duet's JavaScript session layer: one device of one user, over MQTT 5.
// It knows PROTOCOL.md and nothing of the DOM, so a browser app (or a Node
// program) can use it without Duet's page. docs/web.md documents it.
//
//   import mqtt from './mqtt.esm.js'          // MQTT.js 5 (browser bundle or the npm package)
//   const s = new Session({ mqtt, url: 'ws://127.0.0.1:8083/mqtt', userID: 'alice', userSig, deviceID: 'web1' })
//   s.addEventListener('event', e => console.log(e.detail))   // timeline events, each Seq once, in order
//   s.connect()
//   await s.request('openim/sendmsg', { To_Account: 'bob', MsgRandom: 1, MsgBody: [...] })

// SeqTracker keeps the Seqs a device holds: the highest contiguous one
// (`last`) plus any received beyond a gap. PROTOCOL §4: Seqs increase by
// exactly 1, so a Seq above last+1 means events are missing (`openim/sync`
// from `last` fills them) and a Seq at or below `last` is a duplicate.
export class SeqTracker {
  constructor (last = null) {
    this.last = last // null: nothing held yet (a new device starts anywhere)
    this.ahead = new Set()
  }

  // add records seq and answers 'new', 'dup' or 'gap' (new, but after a gap).
  add (seq) {
    if (this.last === null) this.last = seq - 1
    if (seq <= this.last || this.ahead.has(seq)) return 'dup'
    if (seq !== this.last + 1) {
      this.ahead.add(seq)
      return 'gap'
    }
    this.last = seq
    while (this.ahead.delete(this.last + 1)) this.last++
    return 'new'
  }

  // hasGap reports whether Seqs beyond a missing one are held.
  hasGap () { return this.ahead.size > 0 }
}

// Backoff is the reconnect delay: doubling from min to max, with jitter so
// that many pages do not reconnect in step after a server restart.
export function backoff (attempt, min = 500, max = 30000, rand = Math.random) {
  const d = Math.min(max, min * 2 ** Math.max(0, attempt))
  return Math.round(d / 2 + rand() * d / 2)
}

let reqCounter = 0
const enc = new TextEncoder()
const dec = new TextDecoder()

// Session events (EventTarget, detail in event.detail):
//   state   {state: 'connecting'|'online'|'offline'|'kicked'|'refused', error?}
//   syncing {syncing: bool}     true from (re)subscribe until sync_complete
//   event   a timeline event (msg, withdraw, modify, read, …), Seq-ordered, no duplicates
//   live    an ephemeral event (typing, …)
export class Session extends EventTarget {
  constructor ({ mqtt, url, urls, userID, userSig, deviceID, timeout = 15000, seqStore = null }) {
    super()
    Object.assign(this, { mqtt, userID, userSig, deviceID, timeout })
    // urls: the WebSocket listeners of every node of a cluster (docs/web.md
    // "In a cluster"); url: one server. A device may connect to any node.
    this.urls = urls && urls.length ? [...urls] : [url]
    this.urlIndex = 0
    this.url = this.urls[0]
    this.seqStore = seqStore // {get(): number|null, set(n)}: survive reloads
    this.seq = new SeqTracker(seqStore ? seqStore.get() : null)
    this.pending = new Map() // ReqId → {resolve, reject, timer}
    this.state = 'offline'
    this.syncing = false
    this.attempt = 0
    this.gapTimer = null
    this.subscribed = false // replies reach a connection only once it subscribed (docs/mqtt.md)
    this.waiting = [] // requests made before that
  }

  get topicBase () { return `im/${this.userID}/` }

  connect () {
    this._setState('connecting')
    this.url = this.urls[this.urlIndex]
    // With several URLs the session rotates itself, not MQTT.js's `servers`:
    // `servers` entries carry only host, port and protocol (the WebSocket path
    // and the wss: choice come from the first URL's options), and MQTT.js
    // reuses the one client object, so a URL list with different paths or
    // schemes would be silently mangled. A fresh client per URL, made after
    // the same backoff, connects to exactly the URL given. One URL keeps
    // MQTT.js's own reconnect, as before.
    const rotate = this.urls.length > 1
    const c = this.mqtt.connect(this.url, {
      protocolVersion: 5,
      clientId: `${this.userID}:${this.deviceID}`,
      username: this.userID,
      password: this.userSig,
      clean: true, // Duet keeps the device's cursor by client id, not in an MQTT session
      keepalive: 30,
      reconnectPeriod: rotate ? 0 : backoff(0),
      connectTimeout: 10000,
      resubscribe: false // we subscribe on every connect ourselves
    })
    this.client = c
    c.on('connect', () => {
      this.attempt = 0
      if (!rotate) c.options.reconnectPeriod = backoff(0)
      this._setState('online')
      this._setSyncing(true)
      // One filter: timeline, replies and live. The server replays the
      // backlog after this device's cursor, then sends sync_complete.
      c.subscribe(this.topicBase + '#', { qos: 1 }, (err, granted) => {
        if (err || !granted || granted.some(g => g.reason >= 0x80 || g.qos >= 0x80)) {
          this._setState('refused', err ? String(err) : 'subscribe refused')
          return
        }
        this.subscribed = true
        for (const f of this.waiting.splice(0)) f()
      })
    })
    c.on('message', (topic, payload, packet) => this._onMessage(topic, payload, packet))
    c.on('error', err => {
      // A refused CONNECT (bad or expired UserSig, kicked): retrying with
      // the same credentials cannot help.
      if (err && (err.code === 0x86 || err.code === 0x87 || err.code === 4 || err.code === 5)) {
        c.end(true)
        this._setState('refused', err.message)
      }
    })
    c.on('close', () => {
      if (this.client !== c) return // an old client of a rotation
      if (this.state === 'kicked' || this.state === 'refused' || this.state === 'ended') return
      this.subscribed = false
      this._setState('offline')
      this._setSyncing(false)
      if (!rotate) {
        c.options.reconnectPeriod = backoff(++this.attempt)
        return
      }
      // Next node. The first move after a drop is quick (the node is likely
      // dead, another is likely up); a full round of failures backs off.
      c.end(true)
      this.urlIndex = (this.urlIndex + 1) % this.urls.length
      const wait = this.urlIndex === 0 ? backoff(++this.attempt) : backoff(0)
      clearTimeout(this.rotateTimer)
      this.rotateTimer = setTimeout(() => {
        if (this.client === c && this.state === 'offline') this.connect()
      }, wait)
    })
    c.on('reconnect', () => this._setState('connecting'))
    return this
  }

  end () {
    if (this.state === 'ended') return Promise.resolve()
    const wasUp = this.state !== 'refused' && this.state !== 'kicked'
    const online = this.state === 'online'
    this._setState('ended')
    for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new Error('session ended')) }
    this.pending.clear()
    clearTimeout(this.gapTimer)
    clearTimeout(this.rotateTimer)
    // A graceful DISCONNECT lets the server flush this device's cursor now.
    // Not connected: stop the reconnect loop at once.
    return new Promise(resolve => this.client && wasUp ? this.client.end(!online, {}, () => resolve()) : resolve())
  }

  // request publishes {service}/{command} and resolves with the reply when
  // ActionStatus is OK; otherwise it rejects with an Error carrying
  // ErrorCode and ErrorInfo. Replies are matched by ReqId and by the MQTT 5
  // Correlation Data the server echoes.
  request (command, body = {}) {
    const ReqId = `${this.deviceID}-${Date.now().toString(36)}-${++reqCounter}`
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ReqId)
        reject(Object.assign(new Error(`${command}: no reply in ${this.timeout} ms`), { ErrorCode: -1 }))
      }, this.timeout)
      this.pending.set(ReqId, { resolve, reject, timer, command })
      const send = () => this.client.publish(this.topicBase + 'req/' + command, JSON.stringify({ ...body, ReqId }), {
        qos: 1,
        properties: { responseTopic: this.topicBase + 'rsp', correlationData: enc.encode(ReqId) }
      }, err => {
        // A PUBACK with a failure reason (err) comes with the reply, same
        // ReqId, that carries the ErrorInfo: that reply settles the request.
      })
      if (this.subscribed) send()
      else this.waiting.push(send)
    })
  }

  // sendText and sendMsg send one C2C message. Keep `MsgRandom` to retry:
  // a resend with the same MsgRandom and body is stored once (PROTOCOL §3).
  sendMsg (to, msgBody, MsgRandom = randomU32()) {
    return this.request('openim/sendmsg', { To_Account: to, MsgRandom, MsgBody: msgBody }).then(r => {
      // The server will not send this device its own copy (docs/mqtt.md):
      // count its Seq as held, once we know where this device stands.
      if (r.Seq && this.seq.last !== null) this._held(r.Seq)
      return { ...r, MsgRandom }
    })
  }

  sendText (to, text) { return this.sendMsg(to, [{ MsgType: 'TIMTextElem', MsgContent: { Text: text } }]) }

  typing (to) { return this.request('openim/typing', { To_Account: to }) }

  // upload puts a File or Blob into media storage and answers the element
  // content to send (media/apply_upload, presigned PUT, media/commit_upload;
  // docs/media.md). put(url, headers, blob, onProgress) does the PUT: the
  // browser page passes an XMLHttpRequest-based one for progress; the
  // default uses fetch.
  async upload (type, blob, { fileName = blob.name || 'file', onProgress = () => {}, put = fetchPut } = {}) {
    const a = await this.request('media/apply_upload', {
      Type: type, Size: blob.size, ContentType: blob.type || 'application/octet-stream', FileName: fileName
    })
    await put(a.UploadUrl, a.Headers || {}, blob, onProgress)
    const r = await this.request('media/commit_upload', { UUID: a.UUID })
    delete r.ReqId; delete r.Command; delete r.ActionStatus; delete r.ErrorCode; delete r.ErrorInfo
    return r
  }

  _held (seq) {
    this.seq.add(seq)
    this._saveSeq()
  }

  _saveSeq () { if (this.seqStore && this.seq.last !== null) this.seqStore.set(this.seq.last) }

  _onMessage (topic, payload, packet) {
    let ev
    try { ev = JSON.parse(dec.decode(payload)) } catch { return }
    const sub = topic.slice(this.topicBase.length)
    if (sub === 'rsp' || (packet.properties && packet.properties.correlationData)) {
      let id = ev.ReqId
      if (!id && packet.properties && packet.properties.correlationData) id = dec.decode(packet.properties.correlationData)
      const p = this.pending.get(id)
      if (!p) return
      this.pending.delete(id)
      clearTimeout(p.timer)
      if (ev.ActionStatus === 'OK') p.resolve(ev)
      else p.reject(Object.assign(new Error(`${p.command}: ${ev.ErrorCode} ${ev.ErrorInfo}`), { ErrorCode: ev.ErrorCode, ErrorInfo: ev.ErrorInfo, reply: ev }))
      return
    }
    if (sub === 'live') {
      this.dispatchEvent(new CustomEvent('live', { detail: ev }))
      return
    }
    if (sub !== 'in') return
    if (ev.Event === 'sync_complete') {
      this._setSyncing(false)
      return
    }
    if (ev.Event === 'kicked') {
      this._setState('kicked', ev.Reason || 'kicked')
      this.client.end(true)
      return
    }
    if (typeof ev.Seq === 'number') {
      const r = this.seq.add(ev.Seq)
      if (r === 'dup') return
      this._saveSeq()
      if (this.seq.hasGap()) this._scheduleGapFill()
    }
    this.dispatchEvent(new CustomEvent('event', { detail: ev }))
  }

  // A gap is filled by openim/sync from the last contiguous Seq, once the
  // events in flight had a moment to arrive (QoS 1 keeps them in order, so
  // a gap is rare: a cursor lost in a crash, a sendmsg reply overtaken).
  _scheduleGapFill () {
    if (this.gapTimer) return
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null
      if (!this.seq.hasGap() || this.state !== 'online') return
      this.request('openim/sync', { FromSeq: this.seq.last }).catch(() => {})
    }, 500)
  }

  _setState (state, error) {
    this.state = state
    this.dispatchEvent(new CustomEvent('state', { detail: { state, error } }))
  }

  _setSyncing (v) {
    if (this.syncing === v) return
    this.syncing = v
    this.dispatchEvent(new CustomEvent('syncing', { detail: { syncing: v } }))
  }
}

export function randomU32 () { return Math.floor(Math.random() * 0xffffffff) >>> 0 }

async function fetchPut (url, headers, blob, onProgress) {
  const r = await fetch(url, { method: 'PUT', headers, body: blob })
  if (!r.ok) throw new Error(`upload: HTTP ${r.status}`)
  onProgress(1)
}

// A download link of a media element (docs/media.md "Download"): the
// server's stable link, authenticated with this user's UserSig.
export function mediaURL (url, userID, userSig) {
  if (!url) return ''
  const sep = url.includes('?') ? '&' : '?'
  return `${url}${sep}identifier=${encodeURIComponent(userID)}&usersig=${encodeURIComponent(userSig)}`
}
