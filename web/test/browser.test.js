// The web chat in a real browser: Debian's chromium driven by playwright-core,
// against a real `duet serve` on loopback ports (server.js). One server, one
// story told in order, as two people (and a third, blacklisted one) would.
// Screenshots of the main views go to ARTIFACTS (default web/test/artifacts).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { deflateSync } from 'node:zlib'
import { chromium } from 'playwright-core'
import { startDuet } from './server.js'
import mqtt from 'mqtt'
import { Session } from '../app/session.js'

const here = dirname(fileURLToPath(import.meta.url))
const artifacts = process.env.ARTIFACTS || join(here, 'artifacts')
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const T = 15000 // every wait: what the page must show, within this

let duet, browser
before(async () => {
  mkdirSync(artifacts, { recursive: true })
  duet = await startDuet()
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
})
after(async () => {
  await browser?.close()
  await duet?.stop()
})

// A person: a browser context (its own storage: another browser), signed in
// through the page's development sign-in.
async function person (name, viewport = { width: 1100, height: 760 }) {
  const ctx = await browser.newContext({ viewport })
  const outside = []
  ctx.on('request', r => {
    const u = new URL(r.url())
    if (u.hostname !== '127.0.0.1' && u.protocol !== 'data:' && u.protocol !== 'blob:') outside.push(r.url())
  })
  const page = await ctx.newPage()
  await page.goto(duet.base + '/')
  await page.fill('#login-user', name)
  await page.keyboard.press('Enter')
  await page.locator('#conn.online').waitFor({ timeout: T })
  return { ctx, page, outside }
}

async function openChat (page, peer) {
  await page.fill('#new-peer', peer)
  await page.keyboard.press('Enter')
  await page.locator('#compose').waitFor({ timeout: T })
}

async function send (page, text) {
  await page.fill('#compose', text)
  await page.keyboard.press('Enter')
  await msg(page, text).locator('.state', { hasText: '✓' }).waitFor({ timeout: T })
}

// A message whose text is exactly text: a substring match would also take
// "busy 15" stamped 02:50 PM for "busy 150" (CI failed so at 14:50).
const msg = (page, text) => page.locator('.msgs .msg').filter({ has: page.locator('.text').getByText(text, { exact: true }) })
const shot = (page, name) => page.screenshot({ path: join(artifacts, name + '.png') })

// png makes a w×h RGB picture (a gradient) so the server has something to
// scale down to its 198 px thumbnail.
function png (w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0 })
  const crc = b => { let c = 0xffffffff; for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0 }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length)
    const td = Buffer.concat([Buffer.from(type), data])
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td))
    return Buffer.concat([len, td, c])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2
  const raw = Buffer.alloc((w * 3 + 1) * h)
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3
      raw[o] = x * 255 / w; raw[o + 1] = y * 255 / h; raw[o + 2] = 160
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))])
}

test('two people chat in the browser: offline, image, typing, receipts, recall, second tab, blacklist', { timeout: 180000 }, async () => {
  // The sign-in page, as a new user sees it.
  const first = await browser.newContext({ viewport: { width: 1100, height: 760 } })
  const lp = await first.newPage()
  await lp.goto(duet.base + '/')
  await lp.locator('#login-user').waitFor()
  await shot(lp, 'login')
  await first.close()

  const alice = await person('alice')
  const bob = await person('bob')

  // Both ways.
  await openChat(alice.page, 'bob')
  await send(alice.page, 'hi bob')
  const conv = bob.page.locator('.convs li[data-peer="alice"]')
  await conv.locator('.badge', { hasText: '1' }).waitFor({ timeout: T })
  await conv.locator('.conv-last', { hasText: 'hi bob' }).waitFor({ timeout: T })
  await conv.click()
  await msg(bob.page, 'hi bob').waitFor({ timeout: T })
  await send(bob.page, 'hello alice')
  await msg(alice.page, 'hello alice').waitFor({ timeout: T })

  // Typing shows on the other side; a message read shows "Read".
  await bob.page.fill('#compose', 'typing something')
  await bob.page.keyboard.type('.')
  await alice.page.locator('.typing', { hasText: 'bob is typing' }).waitFor({ timeout: T })
  await bob.page.fill('#compose', '')
  await send(alice.page, 'are you there?')
  // "Read" moves under alice's last message, which bob has open; only one.
  await alice.page.waitForFunction(() => {
    const last = document.querySelector('.msgs').lastElementChild
    return last && last.className === 'read' && last.previousElementSibling.textContent.includes('are you there?')
  }, null, { timeout: T })
  assert.equal(await alice.page.locator('.read').count(), 1)
  await shot(alice.page, 'conversation')

  // Bob closes his page; alice sends 3; bob comes back and finds them once
  // "syncing…" is over.
  await bob.page.close()
  // Read receipts count whole seconds (Tencent's MsgReadTime): messages in
  // the second bob last read in would count as read. Wait for the next.
  const readSecond = Math.floor(Date.now() / 1000)
  while (Math.floor(Date.now() / 1000) === readSecond) await new Promise(resolve => setTimeout(resolve, 50))
  for (const t of ['while you were away 1', 'while you were away 2', 'while you were away 3']) await send(alice.page, t)
  bob.page = await bob.ctx.newPage()
  await bob.page.goto(duet.base + '/')
  await bob.page.locator('#conn.online').waitFor({ timeout: T })
  await bob.page.waitForFunction(() => window.duetApp.syncLog.includes('synced'), null, { timeout: T })
  assert.deepEqual(await bob.page.evaluate(() => window.duetApp.syncLog.slice(0, 2)), ['syncing', 'synced'])
  assert.equal(await bob.page.locator('#sync').isHidden(), true)
  const back = bob.page.locator('.convs li[data-peer="alice"]')
  await back.waitFor({ timeout: T })
  await back.locator('.badge', { hasText: '3' }).waitFor({ timeout: T })
  await shot(bob.page, 'conversation-list')
  await back.click()
  for (const t of ['while you were away 1', 'while you were away 2', 'while you were away 3']) await msg(bob.page, t).waitFor({ timeout: T })
  await back.locator('.badge').waitFor({ state: 'detached', timeout: T })
  // What bob was shown is kept in this browser (IndexedDB) for the next load.
  await bob.page.waitForFunction(async () => (await window.duetApp.cache.recent('alice', 50)).some(m => m.MsgBody[0].MsgContent.Text === 'while you were away 3'), null, { timeout: T })

  // An image: progress, then the thumbnail on bob's side (the 198 px
  // rendition), full size on click.
  await alice.page.setInputFiles('#image-input', { name: 'gradient.png', mimeType: 'image/png', buffer: png(800, 600) })
  const thumb = bob.page.locator('.msgs img.thumb')
  await thumb.waitFor({ timeout: T })
  await bob.page.waitForFunction(() => { const i = document.querySelector('.msgs img.thumb'); return i && i.complete && i.naturalWidth > 0 }, null, { timeout: T })
  const size = await thumb.evaluate(i => [i.naturalWidth, i.naturalHeight, i.src])
  assert.deepEqual(size.slice(0, 2), [198, 148], 'the thumbnail rendition: 198 px on its longest side')
  assert.match(size[2], /\/thumb\?/)
  await alice.page.locator('.msgs img.thumb').waitFor({ timeout: T })
  await thumb.click()
  await bob.page.waitForFunction(() => { const i = document.querySelector('.viewer img'); return i && i.complete && i.naturalWidth === 800 }, null, { timeout: T })
  await bob.page.keyboard.press('Escape')

  // Recall: the message turns into "message recalled" on both sides.
  await send(alice.page, 'oops, wrong chat')
  await msg(bob.page, 'oops, wrong chat').waitFor({ timeout: T })
  await msg(alice.page, 'oops, wrong chat').locator('button.recall').click()
  await alice.page.locator('.msg.recalled').waitFor({ timeout: T })
  await bob.page.locator('.msg.recalled').waitFor({ timeout: T })
  assert.equal(await msg(bob.page, 'oops, wrong chat').count(), 0)
  await send(bob.page, 'nice colours 😀')
  await shot(bob.page, 'chat-desktop')

  // A second tab is a second device of bob: the same conversation, and new
  // messages reach both.
  const tab2 = await bob.ctx.newPage()
  await tab2.goto(duet.base + '/#alice')
  await tab2.locator('#conn.online').waitFor({ timeout: T })
  for (const t of ['hi bob', 'hello alice', 'while you were away 3']) await msg(tab2, t).waitFor({ timeout: T })
  await tab2.locator('.msg.recalled').waitFor({ timeout: T })
  await tab2.locator('.msgs img.thumb').waitFor({ timeout: T })
  const devices = await Promise.all([bob.page, tab2].map(p => p.evaluate(() => window.duetApp.session.deviceID)))
  assert.notEqual(devices[0], devices[1], 'each tab is its own device')
  await send(alice.page, 'to both tabs')
  await msg(bob.page, 'to both tabs').waitFor({ timeout: T })
  await msg(tab2, 'to both tabs').waitFor({ timeout: T })
  // Bob's own message from tab 2 shows in tab 1 as his (multi-device sync).
  await send(tab2, 'sent from tab 2')
  await bob.page.locator('.msg.mine', { hasText: 'sent from tab 2' }).waitFor({ timeout: T })
  await tab2.close()

  // Blacklist: bob blacklists mallory in his settings; mallory's message
  // never appears (it is "sent" for her: Tencent's silent default), while
  // alice's, sent after it, does.
  const mallory = await person('mallory')
  await bob.page.click('#settings-btn')
  await bob.page.fill('#black-id', 'mallory')
  await bob.page.keyboard.press('Enter')
  await bob.page.locator('#blacklist li', { hasText: 'mallory' }).waitFor({ timeout: T })
  await shot(bob.page, 'settings')
  await openChat(mallory.page, 'bob')
  await send(mallory.page, 'buy cheap stuff')
  await send(alice.page, 'after the spam')
  await bob.page.locator('.convs li[data-peer="alice"] .conv-last', { hasText: 'after the spam' }).waitFor({ timeout: T })
  assert.equal(await bob.page.locator('.convs li[data-peer="mallory"]').count(), 0)
  assert.equal(await bob.page.getByText('buy cheap stuff').count(), 0)

  // Phone width: the list, then one conversation full-width.
  const phone = await bob.ctx.newPage()
  await phone.setViewportSize({ width: 390, height: 780 })
  await phone.goto(duet.base + '/')
  await phone.locator('.convs li[data-peer="alice"]').waitFor({ timeout: T })
  assert.equal(await phone.locator('.chat').isVisible(), false, 'one pane at a time on a phone')
  await phone.locator('.convs li[data-peer="alice"]').click()
  await msg(phone, 'after the spam').waitFor({ timeout: T })
  assert.equal(await phone.locator('.list').isVisible(), false)
  await shot(phone, 'phone-conversation')
  await phone.click('#back')
  await phone.locator('.convs').waitFor({ timeout: T })
  await phone.close()

  for (const p of [alice, bob, mallory]) assert.deepEqual(p.outside, [], 'no request leaves the server')
  await Promise.all([alice.ctx.close(), bob.ctx.close(), mallory.ctx.close()])
})

// With --friends-only, a message to a stranger fails (20009) and says so;
// a friend request from the settings, accepted on the other side, makes the
// retry go through.
test('friends-only: refused, befriended in settings, retried', async () => {
  const strict = await startDuet(['--friends-only'])
  const open = async name => {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } })
    const page = await ctx.newPage()
    await page.goto(strict.base + '/')
    await page.fill('#login-user', name)
    await page.keyboard.press('Enter')
    await page.locator('#conn.online').waitFor({ timeout: T })
    return { ctx, page }
  }
  try {
    const kim = await open('kim')
    const lee = await open('lee')
    await openChat(kim.page, 'lee')
    await kim.page.fill('#compose', 'hello stranger')
    await kim.page.keyboard.press('Enter')
    const failed = msg(kim.page, 'hello stranger').locator('.failed')
    await failed.waitFor({ timeout: T })
    assert.match(await failed.getAttribute('title'), /friend/i)
    await kim.page.click('#settings-btn')
    await kim.page.fill('#friend-id', 'lee')
    await kim.page.keyboard.press('Enter')
    await kim.page.locator('.settings .status', { hasText: 'waiting for them to accept' }).waitFor({ timeout: T })
    await lee.page.click('#settings-btn')
    await lee.page.locator('#requests li', { hasText: 'kim' }).getByRole('button', { name: 'Accept' }).click()
    await lee.page.locator('#friends li', { hasText: 'kim' }).waitFor({ timeout: T })
    await kim.page.locator('#friends li', { hasText: 'lee' }).waitFor({ timeout: T }) // a friend_add event redraws it
    await kim.page.locator('#friends li', { hasText: 'lee' }).getByRole('button', { name: 'Chat' }).click()
    await msg(kim.page, 'hello stranger').getByRole('button', { name: 'Retry' }).click()
    await msg(kim.page, 'hello stranger').locator('.state', { hasText: '✓' }).waitFor({ timeout: T })
    await lee.page.locator('.convs li[data-peer="kim"]').click()
    await msg(lee.page, 'hello stranger').waitFor({ timeout: T })
    await Promise.all([kim.ctx.close(), lee.ctx.close()])
  } finally {
    await strict.stop()
  }
})

// The server goes away and comes back: the page shows it is offline and
// reconnecting, then online again with what was sent meanwhile.
test('reconnection after a server restart, with a visible state', async () => {
  const srv = await startDuet()
  const open = async name => {
    const ctx = await browser.newContext()
    const page = await ctx.newPage()
    await page.goto(srv.base + '/')
    await page.fill('#login-user', name)
    await page.keyboard.press('Enter')
    await page.locator('#conn.online').waitFor({ timeout: T })
    return { ctx, page }
  }
  try {
    const uma = await open('uma')
    const vic = await open('vic')
    await openChat(uma.page, 'vic')
    await send(uma.page, 'before the restart')
    await vic.page.locator('.convs li[data-peer="uma"]').click()
    await msg(vic.page, 'before the restart').waitFor({ timeout: T })
    await srv.halt()
    await uma.page.locator('#conn.offline', { hasText: 'reconnecting' }).waitFor({ timeout: T })
    await vic.page.locator('#conn.offline').waitFor({ timeout: T })
    await srv.run()
    await uma.page.locator('#conn.online').waitFor({ timeout: 40000 })
    await vic.page.locator('#conn.online').waitFor({ timeout: 40000 })
    await send(uma.page, 'after the restart')
    await msg(vic.page, 'after the restart').waitFor({ timeout: T })
    await Promise.all([uma.ctx.close(), vic.ctx.close()])
  } finally {
    await srv.stop()
  }
})

// Elements other than text: a file upload becomes a download link that
// works; location, custom and face elements show as text.
test('files, locations, custom and face elements', async () => {
  const wes = await person('wes')
  const xia = await person('xia')
  await openChat(wes.page, 'xia')
  await wes.page.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('meeting at noon\n') })
  await xia.page.locator('.convs li[data-peer="wes"]').click()
  const link = xia.page.locator('.msgs a', { hasText: 'notes.txt' })
  await link.waitFor({ timeout: T })
  const href = await link.getAttribute('href')
  assert.equal(await xia.page.evaluate(async u => (await fetch(u)).text(), href), 'meeting at noon\n')
  const s = new Session({ mqtt, url: duet.wsURL, userID: 'wes', userSig: await duet.userSig('wes'), deviceID: 'n1' })
  await new Promise(resolve => { s.addEventListener('syncing', e => { if (!e.detail.syncing) resolve() }); s.connect() })
  await s.sendMsg('xia', [
    { MsgType: 'TIMLocationElem', MsgContent: { Desc: 'the station', Latitude: 48.8443, Longitude: 2.3744 } },
    { MsgType: 'TIMCustomElem', MsgContent: { Data: '{"kind":"order"}', Desc: 'Order #42 shipped', Ext: '', Sound: '' } },
    { MsgType: 'TIMFaceElem', MsgContent: { Index: 1, Data: '😉' } }
  ])
  await s.end()
  const m = xia.page.locator('.msgs .msg', { hasText: 'the station' })
  await m.waitFor({ timeout: T })
  assert.match(await m.textContent(), /the station \(48\.8443, 2\.3744\).*Order #42 shipped.*😉/)
  await Promise.all([wes.ctx.close(), xia.ctx.close()])
})

// History pages of messages sent within the same second: each page must
// start right before the previous one's oldest message (LastMsgKey), not
// skip the rest of its second.
test('scroll-back shows every message of a busy conversation', async () => {
  const { ctx, page } = await person('hal')
  const sender = new Session({ mqtt, url: duet.wsURL, userID: 'ivy', userSig: await duet.userSig('ivy'), deviceID: 'n1' })
  await new Promise(resolve => { sender.addEventListener('syncing', e => { if (!e.detail.syncing) resolve() }); sender.connect() })
  const N = 150
  for (let i = 0; i < N; i += 25) await Promise.all(Array.from({ length: 25 }, (_, j) => sender.sendText('hal', `busy ${i + j + 1}`)))
  await sender.end()
  await page.goto('about:blank')
  await page.goto(duet.base + '/#ivy')
  await msg(page, 'busy 150').waitFor({ timeout: T })
  const deadline = Date.now() + 60000
  while (!await page.evaluate(() => window.duetApp.chat('ivy').complete) && Date.now() < deadline) {
    await page.evaluate(() => { const m = document.querySelector('.msgs'); m.scrollTop = 0; m.dispatchEvent(new Event('scroll')) })
    await page.waitForFunction(() => !window.duetApp.chat('ivy').loading)
  }
  assert.equal(await page.locator('.msgs .msg').count(), N)
  await ctx.close()
})

test('the IndexedDB message cache (cache.js) in the browser', async () => {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  await page.goto(duet.base + '/')
  const got = await page.evaluate(async () => {
    const { MessageCache } = await import('/web/app/cache.js')
    const c = await MessageCache.open('zed')
    const now = Math.floor(Date.now() / 1000)
    const m = (key, from, to, t, text) => ({ MsgKey: key, From_Account: from, To_Account: to, MsgTimeStamp: t, MsgBody: [{ MsgType: 'TIMTextElem', MsgContent: { Text: text } }] })
    await c.put([
      m('k1', 'amy', 'zed', now - 30, 'one'), m('k2', 'zed', 'amy', now - 20, 'two'), m('k3', 'amy', 'zed', now - 10, 'three'),
      m('k4', 'bo', 'zed', now - 5, 'other peer'), m('local-x', 'zed', 'amy', now, 'not stored yet'),
      m('old', 'amy', 'zed', now - 8 * 86400, 'expired')
    ], 'zed')
    await c.update('k2', { recalled: true })
    const last2 = (await c.recent('amy', 2)).map(x => x.MsgKey)
    await c.expire(now - 7 * 86400)
    const all = (await c.recent('amy', 10)).map(x => [x.MsgKey, x.recalled])
    c.close()
    await MessageCache.remove('zed')
    const again = await MessageCache.open('zed')
    const afterRemove = (await again.recent('amy', 10)).length
    again.close()
    return { last2, all, afterRemove }
  })
  assert.deepEqual(got, {
    last2: ['k2', 'k3'],
    all: [['k1', false], ['k2', true], ['k3', false]],
    afterRemove: 0
  })
  await ctx.close()
})

test('measure: first message visible after load, page weight', { timeout: 120000 }, async () => {
  const { ctx, page } = await person('ben')
  const alice = await person('ann')
  await openChat(alice.page, 'ben')
  await send(alice.page, 'warm server')
  // A fresh load of a signed-in page, straight to the conversation. The
  // cache is off so that every byte of a first visit is counted.
  // Fresh loads of a signed-in page, straight to the conversation: first
  // with nothing cached in the browser (HTTP cache off, IndexedDB empty), so
  // every byte of a first visit is counted; then with the message cache.
  const cdp = await ctx.newCDPSession(page)
  await cdp.send('Network.enable')
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true })
  let bytes = 0
  cdp.on('Network.loadingFinished', e => { bytes += e.encodedDataLength })
  const load = async () => {
    await page.goto('about:blank')
    bytes = 0
    const t0 = Date.now()
    await page.goto(duet.base + '/#ann')
    await msg(page, 'warm server').waitFor({ timeout: T })
    const ms = Date.now() - t0
    await page.waitForLoadState('networkidle')
    return [ms, bytes]
  }
  await page.evaluate(async () => { window.duetApp.cache.close(); await (await import('/web/app/cache.js')).MessageCache.remove('ben') })
  const [cold, weight] = await load()
  const [cached] = await load()
  const line = `web chat: first message visible ${cold} ms after navigation (${cached} ms with the IndexedDB cache); first load ${weight} bytes over HTTP`
  console.log(line)
  writeFileSync(join(artifacts, 'measurements.txt'), line + '\n')
  assert.ok(cold < 5000, line)
  await Promise.all([ctx.close(), alice.ctx.close()])
})
