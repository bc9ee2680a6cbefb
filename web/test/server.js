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

function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

export async function startDuet (extraArgs = []) {
  const data = mkdtempSync(join(tmpdir(), 'duet-web-'))
  const [mqtt, ws, http] = [await freePort(), await freePort(), await freePort()]
  const args = ['serve', '--data', data, '--mqtt', `127.0.0.1:${mqtt}`, '--ws', `127.0.0.1:${ws}`,
    '--http', `127.0.0.1:${http}`, '--auto-accounts', '--log-level', 'warn', ...extraArgs]
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
    if (proc.exitCode === null) {
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
