// The session layer's failover (docs/web.md "In a cluster"): alice's session
// has every node's WebSocket URL; the node she is connected to is killed
// (SIGKILL) and her session moves to the next node, resumes from her cursor,
// and receives a message sent after the kill, with no duplicate and no gap.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { Session } from '../app/session.js'
import { startCluster, waitFor as waitForEvent } from './server.js'

// A move to another node takes an election and a reconnect: 30 s, not 10.
const waitFor = (target, type, pred) => waitForEvent(target, type, pred, 30000)

let nodes = []
const sessions = []
after(async () => {
  await Promise.all(sessions.map(s => s.end().catch(() => {})))
  await Promise.all(nodes.map(n => n.stop().catch(() => {})))
})

// retry repeats f until it resolves: a cluster answers once its owner is
// elected, and again once a survivor took over a dead owner's work.
async function retry (f, ms = 30000) {
  const deadline = Date.now() + ms
  for (;;) {
    try { return await f() } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
}

test('a session with every node\'s URL survives the death of its node', async () => {
  nodes = await startCluster(3)
  const [a, b, c] = nodes
  const sig = await a.userSig('alice')
  const alice = new Session({ mqtt, urls: [a.wsURL, b.wsURL], userID: 'alice', userSig: sig, deviceID: 'fo1' })
  const bob = new Session({ mqtt, url: c.wsURL, userID: 'bob', userSig: await c.userSig('bob'), deviceID: 'fo1' })
  sessions.push(alice, bob)
  const seqs = []
  const texts = []
  alice.addEventListener('event', e => {
    if (e.detail.Event !== 'msg') return
    seqs.push(e.detail.Seq)
    texts.push(e.detail.MsgBody[0].MsgContent.Text)
  })
  for (const s of [alice, bob]) { const synced = waitFor(s, 'syncing', d => !d.syncing); s.connect(); await synced }
  assert.equal(alice.url, a.wsURL)

  const before = waitFor(alice, 'event', e => e.Event === 'msg')
  await retry(() => bob.sendText('alice', 'before'))
  await before

  await a.kill('SIGKILL')
  const moved = waitFor(alice, 'syncing', d => !d.syncing)
  await retry(() => bob.sendText('alice', 'after'))
  await moved
  assert.equal(alice.url, b.wsURL)
  if (!texts.includes('after')) await waitFor(alice, 'event', e => e.Event === 'msg')
  assert.deepEqual(texts, ['before', 'after'])
  assert.equal(seqs[1], seqs[0] + 1, `Seqs ${seqs}: no gap`)
})
