// startDuet runs a real `duet serve` on free loopback ports with a fresh data
// directory, for the session-layer and browser tests.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

// duetBinary builds the server once per test process (DUET_BIN overrides).
let built = null
export function duetBinary () {
  if (process.env.DUET_BIN) return process.env.DUET_BIN
  if (built && existsSync(built)) return built
  const dir = mkdtempSync(join(tmpdir(), 'duet-bin-'))
  built = join(dir, 'duet')
  execFileSync('go', ['build', '-o', built, '.'], { cwd: root, stdio: 'inherit' })
  return built
}

// given: ports handed out in this process. A closed port may come back from
// the next listen(0); a cluster's nodes pick a dozen before any binds one.
const given = new Set()
async function freePort () {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const s = createServer()
      s.on('error', reject)
      s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
    })
    if (!given.has(port)) { given.add(port); return port }
  }
}

// startDuet's extraArgs may hold a function of the node's own ports (a
// cluster's flags name them); kill(signal) ends it abruptly (SIGKILL: a crash).
export async function startDuet (extraArgs = []) {
  const data = mkdtempSync(join(tmpdir(), 'duet-web-'))
  const [mqtt, ws, http] = [await freePort(), await freePort(), await freePort()]
  const args = ['serve', '--data', data, '--mqtt', `127.0.0.1:${mqtt}`, '--ws', `127.0.0.1:${ws}`,
    '--http', `127.0.0.1:${http}`, '--auto-accounts', '--log-level', 'warn',
    ...(typeof extraArgs === 'function' ? extraArgs({ mqtt, ws, http }) : extraArgs)]
  const base = `http://127.0.0.1:${http}`
  let proc
  const run = async () => {
    proc = spawn(duetBinary(), args, { stdio: ['ignore', 'inherit', 'inherit'] })
    const deadline = Date.now() + 30000
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`duet serve exited ${proc.exitCode}`)
      try { if ((await fetch(base + '/healthz')).ok) break } catch {}
      if (Date.now() > deadline) { proc.kill(); throw new Error('duet serve did not start') }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  const halt = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise(resolve => proc.once('exit', resolve))
      proc.kill('SIGTERM')
      await exited
    }
  }
  await run()
  return {
    // halt stops the server, keeping its data and ports; run starts it again.
    halt,
    run,
    async kill (signal = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const exited = new Promise(resolve => proc.once('exit', resolve))
      proc.kill(signal)
      await exited
    },
    base,
    wsURL: `ws://127.0.0.1:${ws}/mqtt`,
    data,
    async userSig (user) {
      const r = await fetch(base + '/web/dev-login', { method: 'POST', body: JSON.stringify({ UserID: user }) })
      if (!r.ok) throw new Error(`dev-login ${user}: ${r.status} ${await r.text()}`)
      return (await r.json()).UserSig
    },
    async stop () {
      await halt()
      rmSync(data, { recursive: true, force: true })
    }
  }
}

// startCluster runs n `duet serve` nodes as one cluster (docs/cluster.md) on
// loopback routes, sharing the UserSig secret. Three nodes: the log's three
// replicas keep a quorum when one node dies.
export async function startCluster (n = 3) {
  const routes = []
  for (let i = 0; i < n; i++) routes.push(await freePort())
  const urls = routes.map(p => `nats://127.0.0.1:${p}`).join(',')
  return Promise.all(routes.map((port, i) => startDuet([
    '--secret', 'web-failover-secret', '--media=false',
    '--cluster-name', 'webfo', '--node', `n${i}`, '--cluster-listen', `127.0.0.1:${port}`,
    '--cluster-routes', urls, '--cluster-secret', 'route-secret', '--lease-ttl', '2s'])))
}

// waitFor resolves with the detail of target's next type event that pred
// accepts, or fails after ms.
export function waitFor (target, type, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event in ${ms} ms`)), ms)
    const h = e => { if (pred(e.detail)) { clearTimeout(timer); target.removeEventListener(type, h); resolve(e.detail) } }
    target.addEventListener(type, h)
  })
}
