// Sign-in: a UserID and a UserSig; on a development server, a name alone.
import { h } from './dom.js'

export function renderLogin (main, config, done) {
  const user = h('input', { id: 'login-user', autocomplete: 'username', placeholder: 'UserID, e.g. alice', required: true, maxLength: 32 })
  const sig = h('textarea', { id: 'login-sig', placeholder: 'UserSig', rows: 3 })
  const err = h('div', { className: 'error', role: 'alert' })
  const form = h('form', { className: 'login', 'aria-label': 'Sign in' },
    h('h1', {}, 'Sign in to Duet'),
    h('label', {}, 'UserID', h('br'), user))
  if (config.DevLogin) {
    form.append(h('p', { className: 'hint' }, 'Development server: a UserID is enough (the server signs a UserSig for it).'))
  } else {
    form.append(h('label', {}, 'UserSig', h('br'), sig),
      h('p', { className: 'hint' }, 'Get a UserSig from your app back-end, or on the server: duet usersig --user YOUR_ID'))
  }
  form.append(h('button', { className: 'primary', type: 'submit' }, 'Sign in'), err)
  form.onsubmit = async e => {
    e.preventDefault()
    err.textContent = ''
    const id = user.value.trim()
    try {
      if (config.DevLogin) {
        const r = await fetch('web/dev-login', { method: 'POST', body: JSON.stringify({ UserID: id }) })
        if (!r.ok) throw new Error(await r.text())
        done(id, (await r.json()).UserSig)
      } else {
        if (!sig.value.trim()) throw new Error('a UserSig is needed')
        done(id, sig.value.trim())
      }
    } catch (x) { err.textContent = x.message }
  }
  if (!config.WSPort) err.textContent = 'The server has no WebSocket listener (--ws): the page cannot connect.'
  main.replaceChildren(form)
  user.focus()
}
