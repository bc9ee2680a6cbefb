// h builds an element: h('button', {className: 'x', onclick}, 'text', child…).
// Text is always set as text, never as HTML: message content cannot inject markup.
export function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on') || k in el) el[k] = v
    else el.setAttribute(k, v)
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    el.append(c instanceof Node ? c : String(c))
  }
  return el
}

export function avatar (app, user) {
  const p = app.profiles.get(user)
  if (p && p.image) return h('img', { className: 'avatar', src: p.image, alt: '' })
  return h('span', { className: 'avatar', 'aria-hidden': 'true' }, (app.nick(user)[0] || '?').toUpperCase())
}

// preview is a message's one-line summary for the conversation list.
export function preview (m) {
  if (!m) return ''
  if (m.recalled) return 'message recalled'
  return (m.MsgBody || []).map(e => {
    const c = e.MsgContent || {}
    switch (e.MsgType) {
      case 'TIMTextElem': return c.Text
      case 'TIMFaceElem': return c.Data || `[face ${c.Index}]`
      case 'TIMImageElem': return '[image]'
      case 'TIMFileElem': return `[file] ${c.FileName || ''}`
      case 'TIMSoundElem': return '[voice]'
      case 'TIMVideoFileElem': return '[video]'
      case 'TIMLocationElem': return `[location] ${c.Desc || ''}`
      case 'TIMCustomElem': return c.Desc || '[custom]'
      default: return `[${e.MsgType}]`
    }
  }).join(' ')
}
