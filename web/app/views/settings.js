// Friends and blacklist (sns/ commands), and my nick: enough to see the
// friends-only and blacklist policies work.
import { h } from './dom.js'

export async function renderSettings (root, app, openChat) {
  const s = app.session
  const status = h('div', { className: 'status', role: 'status' })
  const fail = e => { status.textContent = e.ErrorInfo || e.message }
  const ids = r => (r || []).map(x => x.To_Account || x.From_Account || x)

  const nick = h('input', { id: 'my-nick', placeholder: 'Nick', 'aria-label': 'My nick', value: app.nick(app.me) === app.me ? '' : app.nick(app.me) })
  const nickForm = h('form', {}, nick, h('button', { type: 'submit' }, 'Save'))
  nickForm.onsubmit = async e => {
    e.preventDefault()
    try {
      await s.request('profile/portrait_set', { ProfileItem: [{ Tag: 'Tag_Profile_IM_Nick', Value: nick.value.trim() }] })
      status.textContent = 'Saved.'
    } catch (x) { fail(x) }
  }

  const friendIn = h('input', { id: 'friend-id', placeholder: 'UserID', 'aria-label': 'UserID to add as a friend', maxLength: 32 })
  const friendForm = h('form', {}, friendIn, h('button', { type: 'submit' }, 'Add friend'))
  const friends = h('ul', { id: 'friends' })
  const requests = h('ul', { id: 'requests' })
  const blackIn = h('input', { id: 'black-id', placeholder: 'UserID', 'aria-label': 'UserID to blacklist', maxLength: 32 })
  const blackForm = h('form', {}, blackIn, h('button', { type: 'submit' }, 'Blacklist'))
  const black = h('ul', { id: 'blacklist' })

  const load = async () => {
    try {
      const [f, r, b] = await Promise.all([
        s.request('sns/friend_get', { StartIndex: 0 }),
        s.request('sns/friend_request_get', {}),
        s.request('sns/black_list_get', { StartIndex: 0, MaxLimited: 100, LastSequence: 0 })
      ])
      friends.replaceChildren(...ids(f.UserDataItem).map(id => h('li', {},
        h('span', {}, app.nick(id)),
        h('button', { onclick: () => openChat(id) }, 'Chat'),
        h('button', { onclick: () => s.request('sns/friend_delete', { To_Account: [id], DeleteType: 'Delete_Type_Both' }).then(load, fail) }, 'Remove'))))
      if (!friends.children.length) friends.append(h('li', {}, 'No friends yet.'))
      requests.replaceChildren(...(r.RequestItem || []).map(it => h('li', {},
        h('span', {}, `${it.From_Account}${it.AddWording ? ': ' + it.AddWording : ''}`),
        h('button', { onclick: () => s.request('sns/friend_response', { ResponseFriendItem: [{ To_Account: it.From_Account, ResponseAction: 'Response_Action_AgreeAndAdd' }] }).then(load, fail) }, 'Accept'),
        h('button', { onclick: () => s.request('sns/friend_response', { ResponseFriendItem: [{ To_Account: it.From_Account, ResponseAction: 'Response_Action_Reject' }] }).then(load, fail) }, 'Refuse'))))
      if (!requests.children.length) requests.append(h('li', {}, 'No pending requests.'))
      black.replaceChildren(...ids(b.BlackListItem).map(id => h('li', {},
        h('span', {}, id),
        h('button', { onclick: () => s.request('sns/black_list_delete', { To_Account: [id] }).then(load, fail) }, 'Remove'))))
      if (!black.children.length) black.append(h('li', {}, 'Nobody is blacklisted.'))
    } catch (x) { fail(x) }
  }
  // onAdd runs an sns command on the UserID typed in input; the reply's
  // ResultItem says per user whether it worked (ActionStatus stays OK).
  const onAdd = (form, input, command, body, done) => {
    form.onsubmit = async e => {
      e.preventDefault()
      const id = input.value.trim()
      if (!id) return
      try {
        const r = await s.request(command, body(id))
        const res = (r.ResultItem || [])[0] || {}
        // 30539: a request is pending until they accept (AllowType_Type_NeedConfirm).
        status.textContent = res.ResultCode === 30539 ? `Request sent to ${id}: waiting for them to accept.` : res.ResultCode ? `${id}: ${res.ResultInfo || res.ResultCode}` : done(id)
        input.value = ''
        load()
      } catch (x) { fail(x) }
    }
  }
  onAdd(friendForm, friendIn, 'sns/friend_add', id => ({ AddFriendItem: [{ To_Account: id, AddSource: 'AddSource_Type_Web' }] }), id => `${id} is your friend.`)
  onAdd(blackForm, blackIn, 'sns/black_list_add', id => ({ To_Account: [id] }), id => `${id} is blacklisted: their messages no longer reach you.`)
  // Friend and blacklist events (docs/events.md) redraw the lists while shown.
  const onSNS = what => { if (what === 'sns' && root.contains(friends)) load() }
  app.listeners.add(onSNS)
  root.replaceChildren(h('div', { className: 'settings' },
    h('section', {}, h('h2', {}, 'My nick'), nickForm),
    h('section', {}, h('h2', {}, 'Friends'), friendForm, friends),
    h('section', {}, h('h2', {}, 'Friend requests'), requests),
    h('section', {}, h('h2', {}, 'Blacklist'), blackForm, black),
    status))
  await load()
}
