// The conversation list: newest first, nick and avatar, last message,
// unread badge; a field to start a conversation by UserID.
import { h, avatar, preview } from './dom.js'

export class ConversationList {
  constructor (root, app, open) {
    this.app = app
    this.open = open
    const input = h('input', { id: 'new-peer', placeholder: 'Start a chat: UserID', 'aria-label': 'UserID to chat with', maxLength: 32 })
    const form = h('form', { className: 'newchat' }, input, h('button', { type: 'submit' }, 'Chat'))
    form.onsubmit = e => {
      e.preventDefault()
      const peer = input.value.trim()
      if (!peer || peer === app.me) return
      input.value = ''
      app.conv(peer)
      app.loadProfiles([peer])
      open(peer)
    }
    this.ul = h('ul', { className: 'convs', role: 'listbox', 'aria-label': 'Conversations' })
    root.replaceChildren(form, this.ul)
    app.listeners.add(what => { if (what === 'convs') this.render() })
    this.render()
  }

  render () {
    const app = this.app
    const convs = [...app.convs.values()].sort((a, b) => b.time - a.time)
    this.ul.replaceChildren(...convs.map(cv => {
      const li = h('li', { role: 'option', tabIndex: 0, 'data-peer': cv.peer, 'aria-selected': String(app.current === cv.peer) },
        avatar(app, cv.peer),
        h('div', { className: 'conv-text' },
          h('div', { className: 'conv-name' }, app.nick(cv.peer)),
          h('div', { className: 'conv-last' }, preview(cv.last))),
        cv.unread ? h('span', { className: 'badge', 'aria-label': `${cv.unread} unread` }, cv.unread) : null)
      li.onclick = () => this.open(cv.peer)
      li.onkeydown = e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); this.open(cv.peer) } }
      return li
    }))
    if (!convs.length) this.ul.append(h('li', { className: 'empty' }, 'No conversations yet: start one above.'))
  }
}
