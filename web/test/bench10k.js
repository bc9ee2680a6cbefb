// Memory of a tab after 10,000 messages scrolled: alice sends 10,000
// messages to bob over the session layer, then bob's page opens the
// conversation and scrolls back to the first one. Not part of `make test`
// (it takes a minute): `make web-bench`.
import mqtt from 'mqtt'
import { chromium } from 'playwright-core'
import { Session } from '../app/session.js'
import { startDuet } from './server.js'

const N = Number(process.env.N || 10000)
const duet = await startDuet()
try {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } })
  const page = await ctx.newPage()
  await page.goto(duet.base + '/')
  await page.fill('#login-user', 'bob')
  await page.keyboard.press('Enter')
  await page.locator('#conn.online').waitFor()

  const alice = new Session({ mqtt, url: duet.wsURL, userID: 'alice', userSig: await duet.userSig('alice'), deviceID: 'bench' })
  await new Promise(resolve => { alice.addEventListener('syncing', e => { if (!e.detail.syncing) resolve() }); alice.connect() })
  const t0 = Date.now()
  for (let i = 0; i < N; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, N - i) }, (_, j) => alice.sendText('bob', `message ${i + j + 1} of ${N}`)))
  }
  console.log(`sent ${N} in ${Date.now() - t0} ms`)
  await alice.end()

  await page.goto('about:blank')
  await page.goto(duet.base + '/#alice')
  await page.locator('.msgs .msg', { hasText: `message ${N} of ${N}` }).waitFor({ timeout: 60000 })
  const t1 = Date.now()
  // Scroll to the top until the first message is there (each scroll to the
  // top asks openim/getmsg for the next older page).
  while (!await page.evaluate(() => window.duetApp.chat('alice').complete)) {
    await page.evaluate(() => { const m = document.querySelector('.msgs'); m.scrollTop = 0; m.dispatchEvent(new Event('scroll')) })
    await page.waitForFunction(() => !window.duetApp.chat('alice').loading)
  }
  const scrolled = Date.now() - t1
  const cdp = await ctx.newCDPSession(page)
  await cdp.send('HeapProfiler.collectGarbage')
  await cdp.send('Performance.enable')
  const m = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map(x => [x.name, x.value]))
  const shown = await page.locator('.msgs .msg').count()
  console.log(`web chat: ${shown} messages shown, scrolled back in ${scrolled} ms; JS heap ${(m.JSHeapUsedSize / 1048576).toFixed(1)} MB used of ${(m.JSHeapTotalSize / 1048576).toFixed(1)} MB, ${m.Nodes} DOM nodes`)
  await browser.close()
} finally {
  await duet.stop()
}
