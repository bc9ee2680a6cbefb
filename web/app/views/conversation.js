// One conversation: history with scroll-back, the composer (text, emoji,
// image and file upload with progress), typing, read receipts, recall,
// per-message state with retry.
import { h, preview } from './dom.js'
import { mediaURL } from '../session.js'

const EMOJI = ['😀', '😂', '😊', '😍', '😉', '😎', '😢', '😮', '😡', '😆', '😇', '🙂']
const RECALL_WINDOW = 120 // seconds: the server's default --recall-window; it has the last word

export class ConversationView {
  constructor (root, app) {
    this.root = root
    this.app = app
    this.peer = null
    this.typingTimer = null
    this.lastTypingSent = 0
    this.cache = new WeakMap() // message → its element and what it showed
    app.listeners.add((what, peer) => {
      if (what === 'chat' && peer === this.peer) this.renderMsgs()
      if (what === 'typing' && peer === this.peer) this.showTyping()
    })
    this.close()
  }

  close () {
    this.peer = null
    this.root.replaceChildren(h('div', { className: 'empty' }, 'Choose a conversation, or start one by UserID.'))
  }

  async open (peer) {
    const app = this.app
    this.peer = peer
    this.msgs = h('div', { className: 'msgs', role: 'log', 'aria-live': 'polite', 'aria-label': `Messages with ${app.nick(peer)}` })
    this.typing = h('div', { className: 'typing', 'aria-live': 'polite' })
    this.text = h('textarea', { id: 'compose', placeholder: 'Message', 'aria-label': 'Message', rows: 1 })
    const imageIn = h('input', { type: 'file', accept: 'image/*', hidden: true, id: 'image-input' })
    const fileIn = h('input', { type: 'file', hidden: true, id: 'file-input' })
    const emojis = h('div', { className: 'emojis', hidden: true, 'aria-label': 'Emoji' },
      EMOJI.map(e => h('button', { type: 'button', onclick: () => { this.text.value += e; this.text.focus() } }, e)))
    const form = h('form', { className: 'composer' },
      h('button', { type: 'button', className: 'icon', 'aria-label': 'Emoji', onclick: () => { emojis.hidden = !emojis.hidden } }, '☺'),
      h('button', { type: 'button', className: 'tool', 'aria-label': 'Send an image', title: 'Send an image', onclick: () => imageIn.click() }, 'Image'),
      h('button', { type: 'button', className: 'tool', 'aria-label': 'Send a file', title: 'Send a file', onclick: () => fileIn.click() }, 'File'),
      this.text, imageIn, fileIn,
      h('button', { type: 'submit', className: 'primary' }, 'Send'))
    form.onsubmit = e => {
      e.preventDefault()
      const t = this.text.value.trim()
      if (!t) return
      this.text.value = ''
      app.send(peer, [{ MsgType: 'TIMTextElem', MsgContent: { Text: t } }])
    }
    this.text.onkeydown = e => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit() }
    }
    this.text.oninput = () => {
      // openim/typing at most every 3 s while typing: the peer shows it for 5 s.
      const now = Date.now()
      if (now - this.lastTypingSent > 3000 && this.text.value) {
        this.lastTypingSent = now
        app.session.typing(peer).catch(() => {})
      }
    }
    imageIn.onchange = () => { if (imageIn.files[0]) this.upload('image', imageIn.files[0]); imageIn.value = '' }
    fileIn.onchange = () => { if (fileIn.files[0]) this.upload('file', fileIn.files[0]); fileIn.value = '' }
    this.msgs.onscroll = () => { if (this.msgs.scrollTop < 40) this.older() }
    this.more = h('button', { className: 'more', onclick: () => this.older() })
    this.readMark = h('div', { className: 'read' }, 'Read')
    this.root.replaceChildren(this.msgs, this.typing, emojis, form)
    this.stick = true
    this.renderMsgs()
    this.text.focus()
    const c = app.chat(peer)
    if (!c.loaded) {
      await app.loadCached(peer)
      await app.loadHistory(peer)
    }
    if (app.conv(peer).unread || c.msgs.some(m => m.From_Account === peer)) app.markRead(peer)
  }

  async older () {
    const c = this.app.chat(this.peer)
    if (c.complete || c.loading) return
    const before = this.msgs.scrollHeight - this.msgs.scrollTop
    this.keepFromBottom = before
    await this.app.loadHistory(this.peer)
  }

  showTyping () {
    this.typing.textContent = `${this.app.nick(this.peer)} is typing…`
    clearTimeout(this.typingTimer)
    this.typingTimer = setTimeout(() => { this.typing.textContent = '' }, 5000)
  }

  // upload shows a placeholder with a progress bar, uploads (apply, PUT,
  // commit) and sends the element; a failure leaves it "failed" with retry.
  async upload (type, file) {
    const app = this.app
    const peer = this.peer
    const c = app.chat(peer)
    const local = { MsgKey: 'local-' + Math.random().toString(36).slice(2), From_Account: app.me, To_Account: peer, MsgTimeStamp: Math.floor(Date.now() / 1000), MsgBody: [], MsgRandom: Math.floor(Math.random() * 0xffffffff) >>> 0, state: 'uploading', progress: 0, fileName: file.name }
    c.byKey.set(local.MsgKey, local)
    c.msgs.push(local)
    app.changed('chat', peer)
    try {
      const el = await app.session.upload(type, file, {
        fileName: file.name,
        put: xhrPut,
        onProgress: p => { local.progress = p; const bar = this.msgs.querySelector(`[data-key="${local.MsgKey}"] progress`); if (bar) bar.value = p }
      })
      const body = type === 'image'
        ? [{ MsgType: 'TIMImageElem', MsgContent: el }]
        : [{ MsgType: 'TIMFileElem', MsgContent: el }]
      await app.send(peer, body, local)
    } catch (e) {
      local.state = 'failed'
      local.error = e.ErrorInfo || e.message
      app.changed('chat', peer)
    }
  }

  renderMsgs () {
    if (!this.msgs) return
    const app = this.app
    const c = app.chat(this.peer)
    const box = this.msgs
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60
    const nodes = []
    if (!c.complete) {
      this.more.textContent = c.loading ? 'Loading…' : 'Earlier messages'
      nodes.push(this.more)
    }
    // "Read" goes under the last of my messages the peer has read.
    let lastRead = null
    for (const m of c.msgs) if (m.From_Account === app.me && m.state === 'sent' && !m.recalled && m.MsgTimeStamp <= c.peerReadTime) lastRead = m
    for (const m of c.msgs) {
      nodes.push(this.renderMsg(m))
      if (m === lastRead) nodes.push(this.readMark)
    }
    reconcile(box, nodes)
    if (this.keepFromBottom) {
      box.scrollTop = box.scrollHeight - this.keepFromBottom
      this.keepFromBottom = 0
    } else if (atBottom || this.stick) {
      box.scrollTop = box.scrollHeight
      this.stick = false
    }
  }

  // renderMsg reuses a message's element while nothing shown changed, so a
  // long conversation is not rebuilt on every event.
  renderMsg (m) {
    const c = this.cache.get(m)
    if (c && c.key === m.MsgKey && c.state === m.state && c.recalled === m.recalled && c.body === m.MsgBody && c.error === m.error && m.state !== 'uploading') return c.el
    const el = this.buildMsg(m)
    this.cache.set(m, { el, key: m.MsgKey, state: m.state, recalled: m.recalled, body: m.MsgBody, error: m.error })
    return el
  }

  buildMsg (m) {
    const app = this.app
    const mine = m.From_Account === app.me
    const cls = 'msg' + (mine ? ' mine' : '') + (m.recalled ? ' recalled' : '')
    const div = h('div', { className: cls, 'data-key': m.MsgKey, tabIndex: -1 })
    if (m.recalled) {
      div.append('message recalled')
      return div
    }
    if (m.state === 'uploading') {
      div.append(h('div', {}, m.fileName), h('progress', { max: 1, value: m.progress || 0, 'aria-label': 'Upload progress' }))
      return div
    }
    for (const e of m.MsgBody || []) div.append(this.renderElem(e))
    const meta = h('div', { className: 'meta' }, h('time', {}, new Date(m.MsgTimeStamp * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })))
    if (mine) {
      if (m.state === 'sending') meta.append(h('span', { className: 'state' }, 'sending…'))
      else if (m.state === 'failed') {
        meta.append(h('span', { className: 'failed', title: m.error || '' }, 'failed'),
          h('button', { className: 'link', onclick: () => app.retry(this.peer, m) }, 'Retry'))
      } else {
        meta.append(h('span', { className: 'state' }, '✓'))
        if (Date.now() / 1000 - m.MsgTimeStamp < RECALL_WINDOW) {
          meta.append(h('button', {
            className: 'link recall',
            onclick: () => app.recall(this.peer, m).catch(e => alertIn(div, e.ErrorInfo || e.message))
          }, 'Recall'))
        }
      }
    }
    div.append(meta)
    return div
  }

  renderElem (e) {
    const app = this.app
    const c = e.MsgContent || {}
    const link = u => mediaURL(u, app.me, app.sig)
    switch (e.MsgType) {
      case 'TIMTextElem': return h('div', { className: 'text' }, c.Text)
      case 'TIMFaceElem': return h('div', { className: 'face' }, c.Data || `[face ${c.Index}]`)
      case 'TIMImageElem': {
        const infos = c.ImageInfoArray || []
        const pick = t => (infos.find(i => i.Type === t) || infos[0] || {}).URL
        const img = h('img', { className: 'thumb', src: link(pick(3)), alt: 'image', tabIndex: 0 })
        const full = () => {
          const v = h('div', { className: 'viewer', role: 'dialog', 'aria-label': 'Image', tabIndex: 0 }, h('img', { src: link(pick(1)), alt: 'image, full size' }))
          v.onclick = () => v.remove()
          v.onkeydown = ev => { if (ev.key === 'Escape') v.remove() }
          document.body.append(v)
          v.focus()
        }
        img.onclick = full
        img.onkeydown = ev => { if (ev.key === 'Enter') full() }
        return img
      }
      case 'TIMFileElem': return h('a', { href: link(c.Url), download: c.FileName || '' }, `📎 ${c.FileName || 'file'} (${size(c.FileSize)})`)
      case 'TIMSoundElem': return h('a', { href: link(c.Url) }, `🔊 voice, ${c.Second || '?'} s`)
      case 'TIMVideoFileElem': return h('a', { href: link(c.VideoUrl) }, `🎬 video, ${c.VideoSecond || '?'} s`)
      case 'TIMLocationElem': return h('div', { className: 'location' }, `📍 ${c.Desc || ''} (${c.Latitude}, ${c.Longitude})`)
      case 'TIMCustomElem': return h('div', { className: 'custom' }, c.Desc || '[custom message]')
      default: return h('div', {}, preview({ MsgBody: [e] }))
    }
  }
}

// reconcile makes box's children exactly nodes, moving only what changed:
// a page of older messages is inserted at the top, the rest stays put.
function reconcile (box, nodes) {
  let cur = box.firstChild
  for (const n of nodes) {
    if (cur === n) { cur = cur.nextSibling; continue }
    box.insertBefore(n, cur)
  }
  while (cur) { const next = cur.nextSibling; box.removeChild(cur); cur = next }
}

function size (n) {
  if (!n) return '?'
  if (n < 1024) return n + ' B'
  if (n < 1 << 20) return (n / 1024).toFixed(1) + ' KB'
  return (n / (1 << 20)).toFixed(1) + ' MB'
}

function alertIn (div, text) {
  div.append(h('div', { className: 'error', role: 'alert' }, text))
}

// xhrPut is the presigned PUT with upload progress (fetch has none).
function xhrPut (url, headers, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest()
    x.open('PUT', url)
    for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v)
    x.upload.onprogress = e => { if (e.lengthComputable) onProgress(e.loaded / e.total) }
    x.onload = () => x.status >= 200 && x.status < 300 ? (onProgress(1), resolve()) : reject(new Error(`upload: HTTP ${x.status}`))
    x.onerror = () => reject(new Error('upload failed (network or CORS)'))
    x.send(blob)
  })
}
