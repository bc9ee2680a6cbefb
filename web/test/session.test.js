// The session layer (web/app/session.js) under node --test: its Seq logic
// alone, then against a real duet serve over WebSocket with the mqtt package.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { Session, SeqTracker, backoff, mediaURL } from '../app/session.js'
import { startDuet, waitFor } from './server.js'

test('SeqTracker: in order, duplicates, gaps', () => {
  const cases = [
    { name: 'new device starts anywhere', start: null, feed: [40, 41, 42], want: ['new', 'new', 'new'], last: 42, gap: false },
    { name: 'duplicates after a replay', start: 5, feed: [4, 5, 6, 6], want: ['dup', 'dup', 'new', 'dup'], last: 6, gap: false },
    { name: 'a gap then its fill', start: 5, feed: [8, 7, 6], want: ['gap', 'gap', 'new'], last: 8, gap: false },
    { name: 'a gap left open', start: 5, feed: [6, 9], want: ['new', 'gap'], last: 6, gap: true },
    { name: 'a duplicate beyond the gap', start: 1, feed: [3, 3], want: ['gap', 'dup'], last: 1, gap: true }
  ]
  for (const c of cases) {
    const t = new SeqTracker(c.start)
    assert.deepEqual(c.feed.map(s => t.add(s)), c.want, c.name)
    assert.equal(t.last, c.last, c.name)
    assert.equal(t.hasGap(), c.gap, c.name)
  }
})

test('backoff doubles up to its maximum, with jitter below it', () => {
  assert.equal(backoff(0, 500, 30000, () => 1), 500)
  assert.equal(backoff(3, 500, 30000, () => 1), 4000)
  assert.equal(backoff(20, 500, 30000, () => 1), 30000)
  assert.equal(backoff(3, 500, 30000, () => 0), 2000)
})

let duet
const sessions = [] // ended after the tests, whatever failed: a reconnecting client would keep node alive
before(async () => { duet = await startDuet() })
after(async () => {
  await Promise.all(sessions.map(s => s.end().catch(() => {})))
  await duet?.stop()
})


async function session (user, deviceID, seqStore = null) {
  const s = new Session({ mqtt, url: duet.wsURL, userID: user, userSig: await duet.userSig(user), deviceID, seqStore })
  sessions.push(s)
  const synced = waitFor(s, 'syncing', d => !d.syncing)
  s.connect()
  await synced
  return s
}

test('request/reply, delivery, offline backlog and sync_complete over WebSocket', async () => {
  const alice = await session('alice', 'n1')
  const bob = await session('bob', 'n1')
  const got = waitFor(bob, 'event', e => e.Event === 'msg')
  const r = await alice.sendText('bob', 'hello bob')
  assert.ok(r.MsgKey && r.Seq > 0)
  const ev = await got
  assert.equal(ev.MsgBody[0].MsgContent.Text, 'hello bob')
  assert.equal(ev.From_Account, 'alice')

  // An error reply rejects with Tencent's code.
  await assert.rejects(alice.request('openim/msgwithdraw', { To_Account: 'bob', MsgKey: 'nope' }), e => e.ErrorCode === 20022)

  // Bob goes away; his device's backlog comes back on reconnect, each Seq
  // once, before sync_complete.
  let saved = null
  const store = { get: () => saved, set: n => { saved = n } }
  await bob.end()
  for (const t of ['one', 'two', 'three']) await alice.sendText('bob', t)
  const bob2 = new Session({ mqtt, url: duet.wsURL, userID: 'bob', userSig: await duet.userSig('bob'), deviceID: 'n1', seqStore: store })
  sessions.push(bob2)
  const texts = []
  bob2.addEventListener('event', e => { if (e.detail.Event === 'msg') texts.push(e.detail.MsgBody[0].MsgContent.Text) })
  const synced = waitFor(bob2, 'syncing', d => !d.syncing)
  bob2.connect()
  await synced
  assert.deepEqual(texts, ['one', 'two', 'three'])
  assert.ok(saved > 0, 'the Seq store was written')

  // openim/sync replays what this device already holds: all duplicates.
  // Its reply follows the replay on the same connection.
  const before = texts.length
  const r2 = await bob2.request('openim/sync', { FromSeq: 0 })
  assert.ok(r2.LastSeq >= saved)
  assert.equal(texts.length, before, 'a replay must not deliver an event twice')
  await Promise.all([alice.end(), bob2.end()])
})

test('a missing Seq is fetched with openim/sync', async () => {
  const bob = await session('carol', 'n1')
  const alice = await session('dave', 'n1')
  const first = waitFor(bob, 'event', e => e.Event === 'msg') // before sending: the event may overtake the reply
  await alice.sendText('carol', 'first')
  await first
  // Pretend an event was lost: the tracker is one behind what it holds,
  // and the next event arrives beyond a gap.
  const seen = []
  bob.addEventListener('event', e => seen.push(e.detail.Seq))
  const held = bob.seq.last
  bob.seq.last -= 1
  await alice.sendText('carol', 'second')
  const deadline = Date.now() + 10000
  while (!(seen.length >= 2 && !bob.seq.hasGap()) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
  assert.equal(bob.seq.hasGap(), false, 'gap filled')
  // The new event first (beyond the gap), then the "missing" one from the sync.
  assert.deepEqual(seen, [held + 1, held])
  await Promise.all([alice.end(), bob.end()])
})

test('upload: apply, presigned PUT, commit', async () => {
  const s = await session('erin', 'n1')
  const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64')
  const el = await s.upload('image', new Blob([png], { type: 'image/png' }), { fileName: 'dot.png' })
  assert.ok(el.UUID)
  assert.equal(el.ImageInfoArray.length, 3)
  const r = await s.sendMsg('alice', [{ MsgType: 'TIMImageElem', MsgContent: el }])
  assert.ok(r.MsgKey)
  // The thumbnail link works with the UserSig (docs/media.md "Download").
  const thumb = el.ImageInfoArray.find(i => i.Type === 3)
  const got = await fetch(mediaURL(thumb.URL, 'erin', s.userSig))
  assert.equal(got.status, 200)
  assert.ok((await got.arrayBuffer()).byteLength > 0)
  await s.end()
})

test('a refused login says so and does not retry', async () => {
  const s = new Session({ mqtt, url: duet.wsURL, userID: 'gina', userSig: 'forged', deviceID: 'n1' })
  const st = waitFor(s, 'state', d => d.state === 'refused')
  s.connect()
  const d = await st
  assert.match(String(d.error), /signature|Bad|bad|Not authorized/i)
  await s.end()
})
