// The page: sign-in, then the chat. It owns the state (conversations,
// loaded messages, profiles) and feeds it from the session layer; the views
// in views/ draw it. Everything goes over MQTT (session.js), except the
// page's own config and, on a development server, the name-only sign-in.
import mqtt from '../vendor/mqtt.esm.js'
import { Session } from './session.js'
import { MessageCache } from './cache.js'
import { renderLogin } from './views/login.js'
import { ConversationList } from './views/conversations.js'
import { ConversationView } from './views/conversation.js'
import { renderSettings } from './views/settings.js'

const $ = id => document.getElementById(id)

export class App {
  constructor (config) {
    this.config = config
    this.me = null
    this.sig = null
    this.session = null
    this.convs = new Map() // peer → {peer, time, unread, last}
    this.chats = new Map() // peer → {msgs: [], byKey: Map, loaded, complete, next, peerReadTime}
    this.profiles = new Map() // user → {nick, image}
    this.current = null
    this.listeners = new Set()
    this.syncLog = [] // 'syncing', 'synced', … in order (shown as "syncing…")
  }

  // changed tells the views to redraw (what: 'convs', 'chat', 'typing', …).
  changed (what, peer) { for (const f of this.listeners) f(what, peer) }

  wsURL () {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
    return `${proto}//${location.hostname}:${this.config.WSPort}${this.config.WSPath}`
  }

  async start (user, sig) {
    this.me = user
    this.sig = sig
    const deviceID = await claimDevice(user)
    this.cache = await MessageCache.open(user).catch(() => null)
    const seqKey = `duet-seq:${user}:${deviceID}`
    const s = new Session({
      mqtt, urls: this.config.MQTTURLs && this.config.MQTTURLs.length ? this.config.MQTTURLs : [this.wsURL()], userID: user, userSig: sig, deviceID,
      seqStore: { get: () => { const v = localStorage.getItem(seqKey); return v === null ? null : Number(v) }, set: n => localStorage.setItem(seqKey, String(n)) }
    })
    this.session = s
    s.addEventListener('state', e => this.onState(e.detail))
    s.addEventListener('syncing', e => {
      $('sync').hidden = !e.detail.syncing
      this.syncLog.push(e.detail.syncing ? 'syncing' : 'synced')
      if (!e.detail.syncing) this.refreshConversations()
    })
    s.addEventListener('event', e => this.onEvent(e.detail))
    s.addEventListener('live', e => this.onLive(e.detail))
    s.connect()
  }

  onState ({ state, error }) {
    const el = $('conn')
    el.className = 'conn ' + state
    el.textContent = { online: 'online', connecting: 'connecting…', offline: 'offline — reconnecting', kicked: 'signed out by the server', refused: 'sign-in refused', ended: '' }[state] || state
    if (error && (state === 'refused' || state === 'kicked')) el.title = error
    if (state === 'refused') {
      localStorage.removeItem('duet-login')
      el.textContent = 'sign-in refused: ' + (error || '')
    }
  }

  peerOf (m) { return m.From_Account === this.me ? m.To_Account : m.From_Account }

  chat (peer) {
    let c = this.chats.get(peer)
    if (!c) {
      c = { msgs: [], byKey: new Map(), loaded: false, complete: false, next: null, peerReadTime: 0 }
      this.chats.set(peer, c)
    }
    return c
  }

  conv (peer) {
    let c = this.convs.get(peer)
    if (!c) {
      c = { peer, time: 0, unread: 0, last: null }
      this.convs.set(peer, c)
    }
    return c
  }

  // addMsg puts a stored message (event, history, own send) into its
  // conversation once, by MsgKey, in time order.
  addMsg (m) {
    const peer = this.peerOf(m)
    const c = this.chat(peer)
    const old = c.byKey.get(m.MsgKey)
    if (old) { Object.assign(old, m); return old }
    const msg = { ...m, state: m.state || 'sent' }
    c.byKey.set(m.MsgKey, msg)
    // Time order; within one second (the unit of MsgTimeStamp), timeline
    // Seq where both have one, else arrival order.
    const after = (a, b) => a.MsgTimeStamp > b.MsgTimeStamp || (a.MsgTimeStamp === b.MsgTimeStamp && a.Seq && b.Seq && a.Seq > b.Seq)
    let i = c.msgs.length
    while (i > 0 && after(c.msgs[i - 1], msg)) i--
    c.msgs.splice(i, 0, msg)
    return msg
  }

  onEvent (ev) {
    switch (ev.Event) {
      case 'msg': {
        if (!ev.From_Account && !ev.To_Account) return
        const peer = ev.System ? (ev.From_Account || 'system') : this.peerOf(ev)
        if (ev.SenderProfile && ev.From_Account) this.setProfile(ev.From_Account, ev.SenderProfile.Tag_Profile_IM_Nick, ev.SenderProfile.Tag_Profile_IM_Image)
        const msg = this.addMsg({ ...ev, recalled: (ev.MsgFlagBits & 8) !== 0 })
        this.cached([msg])
        const cv = this.conv(peer)
        if (ev.MsgTimeStamp >= cv.time) { cv.time = ev.MsgTimeStamp; cv.last = msg }
        if (ev.From_Account !== this.me) {
          if (this.current === peer && document.visibilityState === 'visible') this.markRead(peer)
          else cv.unread++
        }
        this.changed('convs')
        this.changed('chat', peer)
        break
      }
      case 'withdraw':
      case 'modify': {
        const peer = this.peerOf(ev)
        const m = this.chat(peer).byKey.get(ev.MsgKey)
        if (m) {
          if (ev.Event === 'withdraw') m.recalled = true
          else m.MsgBody = ev.MsgBody
        }
        if (this.cache) this.cache.update(ev.MsgKey, ev.Event === 'withdraw' ? { recalled: true } : { MsgBody: ev.MsgBody }).catch(() => {})
        const cv = this.convs.get(peer)
        if (cv && cv.last && cv.last.MsgKey === ev.MsgKey) {
          if (ev.Event === 'withdraw') cv.last = { ...cv.last, recalled: true }
          else cv.last = { ...cv.last, MsgBody: ev.MsgBody }
        }
        this.changed('convs')
        this.changed('chat', peer)
        break
      }
      case 'friend_request': case 'friend_request_delete': case 'friend_add': case 'friend_delete':
      case 'blacklist_add': case 'blacklist_delete':
        this.changed('sns')
        break
      case 'read':
        if (ev.Report_Account === this.me) { // I read it on another device
          const cv = this.convs.get(ev.Peer_Account)
          if (cv) { cv.unread = 0; this.changed('convs') }
        } else {
          const c = this.chat(ev.Report_Account)
          c.peerReadTime = Math.max(c.peerReadTime, ev.MsgReadTime)
          this.changed('chat', ev.Report_Account)
        }
        break
    }
  }

  onLive (ev) {
    if (ev.Event === 'typing' && ev.From_Account) this.changed('typing', ev.From_Account)
  }

  setProfile (user, nick, image) {
    const p = this.profiles.get(user) || {}
    if (nick) p.nick = nick
    if (image) p.image = image
    this.profiles.set(user, p)
  }

  async refreshConversations () {
    try {
      const r = await this.session.request('recentcontact/get_list', {})
      for (const it of r.SessionItem || []) {
        const cv = this.conv(it.To_Account)
        cv.time = Math.max(cv.time, it.MsgTime)
        cv.unread = this.current === it.To_Account ? 0 : it.UnreadMsgNum
        if (it.LastMsg && (!cv.last || it.LastMsg.MsgTimeStamp >= cv.last.MsgTimeStamp)) cv.last = { ...it.LastMsg, recalled: (it.LastMsg.MsgFlagBits & 8) !== 0 }
      }
      this.changed('convs')
      this.loadProfiles([...this.convs.keys()])
    } catch (e) { console.warn(e) }
  }

  async loadProfiles (users) {
    users = users.filter(u => !this.profiles.has(u))
    for (let i = 0; i < users.length; i += 100) {
      try {
        const r = await this.session.request('profile/portrait_get', { To_Account: users.slice(i, i + 100), TagList: ['Tag_Profile_IM_Nick', 'Tag_Profile_IM_Image'] })
        for (const u of r.UserProfileItem || []) {
          const v = tag => ((u.ProfileItem || []).find(p => p.Tag === tag) || {}).Value
          this.setProfile(u.To_Account, v('Tag_Profile_IM_Nick'), v('Tag_Profile_IM_Image'))
          if (!this.profiles.has(u.To_Account)) this.profiles.set(u.To_Account, {})
        }
      } catch (e) { console.warn(e) }
    }
    this.changed('convs')
  }

  // loadHistory fetches the next older page of a conversation (openim/getmsg).
  async loadHistory (peer) {
    const c = this.chat(peer)
    if (c.complete || c.loading) return
    c.loading = true
    try {
      const body = { Peer_Account: peer, MaxCnt: c.next ? 100 : 30 } // a screenful first, then bigger pages
      if (c.next) Object.assign(body, c.next)
      const r = await this.session.request('openim/getmsg', body)
      this.cached((r.MsgList || []).map(m => ({ ...m, recalled: (m.MsgFlagBits & 8) !== 0 })))
      for (const m of r.MsgList || []) {
        this.addMsg({ ...m, recalled: (m.MsgFlagBits & 8) !== 0 })
        if (m.From_Account === this.me && m.IsPeerRead) c.peerReadTime = Math.max(c.peerReadTime, m.MsgTimeStamp)
      }
      c.complete = r.Complete === 1 || !(r.MsgList || []).length
      // The next page ends before the oldest message of this one: MaxTime
      // is exclusive, so +1 keeps the rest of that second (LastMsgKey cuts it).
      c.next = { MaxTime: r.LastMsgTime + 1, LastMsgKey: r.LastMsgKey }
      c.loaded = true
    } finally { c.loading = false }
    this.changed('chat', peer)
  }

  cached (msgs) { if (this.cache) this.cache.put(msgs, this.me).catch(e => console.warn(e)) }

  // loadCached shows what this browser kept of a conversation (cache.js)
  // while the server is asked for its history.
  async loadCached (peer) {
    const c = this.chat(peer)
    if (!this.cache || c.loaded || c.msgs.length) return
    for (const m of await this.cache.recent(peer, 50).catch(() => [])) this.addMsg(m)
    this.changed('chat', peer)
  }

  markRead (peer) {
    const cv = this.conv(peer)
    cv.unread = 0
    clearTimeout(this.readTimer)
    // Read up to the newest message shown, not "now": one that arrives
    // meanwhile stays unread. (Times are in seconds, Tencent's unit: a
    // message from the same second as the read counts as read.)
    const shown = this.chat(peer).msgs.filter(m => m.From_Account === peer)
    const body = { Peer_Account: peer }
    if (shown.length) body.MsgReadTime = shown[shown.length - 1].MsgTimeStamp
    this.readTimer = setTimeout(() => this.session.request('openim/set_msg_read', body).catch(e => console.warn(e)), 150)
    this.changed('convs')
  }

  // send delivers a message body with a local placeholder that turns into
  // the stored message, or into "failed" with a retry that reuses MsgRandom.
  async send (peer, body, placeholder = null) {
    const c = this.chat(peer)
    const local = placeholder || { MsgKey: 'local-' + Math.random().toString(36).slice(2), From_Account: this.me, To_Account: peer, MsgTimeStamp: Math.floor(Date.now() / 1000), MsgBody: body, MsgRandom: Math.floor(Math.random() * 0xffffffff) >>> 0 }
    local.MsgBody = body
    local.state = 'sending'
    if (!c.byKey.has(local.MsgKey)) { c.byKey.set(local.MsgKey, local); c.msgs.push(local) }
    this.changed('chat', peer)
    try {
      const r = await this.session.sendMsg(peer, body, local.MsgRandom)
      c.byKey.delete(local.MsgKey)
      const existing = c.byKey.get(r.MsgKey)
      if (existing) c.msgs.splice(c.msgs.indexOf(local), 1)
      else {
        Object.assign(local, { MsgKey: r.MsgKey, MsgTimeStamp: r.MsgTime, Seq: r.Seq, state: 'sent' })
        c.byKey.set(r.MsgKey, local)
      }
      this.cached([existing || local])
      const cv = this.conv(peer)
      cv.time = r.MsgTime
      cv.last = existing || local
      this.changed('convs')
    } catch (e) {
      local.state = 'failed'
      local.error = e.ErrorInfo || e.message
    }
    this.changed('chat', peer)
    return local
  }

  retry (peer, msg) { return this.send(peer, msg.MsgBody, msg) }

  recall (peer, msg) {
    return this.session.request('openim/msgwithdraw', { To_Account: peer, MsgKey: msg.MsgKey })
  }

  nick (user) { const p = this.profiles.get(user); return (p && p.nick) || user }
}

// claimDevice picks this tab's DeviceID. Each open tab is its own device
// (its own cursor); a tab opened after another closed reuses that DeviceID,
// so it resumes where the closed one stopped. Web Locks hold a DeviceID for
// the tab's life; without them (plain http on a non-local host), each tab
// keeps a random one for its session.
async function claimDevice (user) {
  if (navigator.locks) {
    for (let i = 0; i < 64; i++) {
      const got = await new Promise(resolve => {
        navigator.locks.request(`duet-device:${user}:${i}`, { ifAvailable: true }, lock => {
          resolve(!!lock)
          return lock ? new Promise(() => {}) : undefined
        })
      })
      if (got) return `web${i}`
    }
  }
  const k = `duet-device:${user}`
  let id = sessionStorage.getItem(k)
  if (!id) { id = 'web-' + Math.random().toString(36).slice(2, 10); sessionStorage.setItem(k, id) }
  return id
}

async function main () {
  const config = await (await fetch('web/config.json')).json()
  const app = new App(config)
  window.duetApp = app // for the console and the browser tests
  const main = $('main')
  const saved = JSON.parse(localStorage.getItem('duet-login') || 'null')
  const go = (user, sig) => {
    localStorage.setItem('duet-login', JSON.stringify({ user, sig }))
    showChat(app, main)
    app.start(user, sig).then(() => app.ready && app.ready())
  }
  if (saved && saved.user && saved.sig) go(saved.user, saved.sig)
  else renderLogin(main, config, go)
  $('logout').onclick = async () => {
    localStorage.removeItem('duet-login')
    if (app.session) await app.session.end()
    if (app.cache) app.cache.close()
    if (app.me) await MessageCache.remove(app.me)
    location.reload()
  }
}

function showChat (app, main) {
  main.replaceChildren()
  const listPane = document.createElement('section')
  listPane.className = 'list'
  listPane.setAttribute('aria-label', 'Conversations')
  const chatPane = document.createElement('section')
  chatPane.className = 'chat'
  chatPane.setAttribute('aria-label', 'Conversation')
  main.append(listPane, chatPane)
  $('logout').hidden = false
  $('settings-btn').hidden = false
  const chat = new ConversationView(chatPane, app)
  const open = peer => {
    app.current = peer
    main.classList.add('in-chat')
    $('back').hidden = false
    $('title').textContent = app.nick(peer)
    chat.open(peer)
    list.render()
  }
  const list = new ConversationList(listPane, app, open)
  $('back').onclick = () => {
    app.current = null
    main.classList.remove('in-chat')
    $('back').hidden = true
    $('title').textContent = app.me
    chat.close()
    list.render()
  }
  $('settings-btn').onclick = () => {
    app.current = null
    main.classList.add('in-chat')
    $('back').hidden = false
    $('title').textContent = 'Friends and blacklist'
    chat.close()
    renderSettings(chatPane, app, open)
  }
  $('title').textContent = app.me
  // /#bob opens the conversation with bob.
  const fromHash = () => { const p = decodeURIComponent(location.hash.slice(1)); if (p && p !== app.me) { app.conv(p); open(p) } }
  window.addEventListener('hashchange', fromHash)
  app.session ? fromHash() : app.ready = fromHash
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && app.current && app.conv(app.current).unread) app.markRead(app.current)
  })
}

main().catch(e => {
  document.getElementById('main').textContent = 'The page could not start: ' + e.message
})
