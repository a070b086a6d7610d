// Ask imgworker for an image's facts from Node.js (npm `gearman` 2.1.0); nothing is written.
// Usage: node info.js HOST PORT SRC_URL [FACT...]   (meta thumbhash blurhash dominant phash; default meta)
// Exit: 0 ok (prints the result JSON), 1 the job failed (prints code and message), 2 no job server.
const gearman = require('gearman')

const [host, port, src, ...facts] = process.argv.slice(2)
const client = gearman(host, Number(port), { timeout: 120000 })

const finish = (code, out, err) => {
  if (out) console.log(out)
  if (err) console.error(err)
  client.close()
  process.exit(code)
}

client.on('timeout', () => finish(2, null, 'timed out waiting for the job'))
client.on('error', (e) => finish(2, null, `gearman error: ${e.message}`))
client.on('WORK_FAIL', () => finish(2, null, 'job failed at the Gearman level'))
client.on('WORK_COMPLETE', (job) => {
  const body = job.payload.toString()
  const result = JSON.parse(body)
  if (result.ok) finish(0, body)
  finish(1, body, `${result.error.code}: ${result.error.message}`)
})

client.connect(() => {
  client.submitJob('info', JSON.stringify({ src, analyze: facts.length ? facts : ['meta'] }))
})
