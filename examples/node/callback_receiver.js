// Receive imgworker's HTTP callback in Node.js and check its signature before trusting it.
// The worker POSTs the result JSON with
//   X-Imgworker-Signature: sha256=<hex HMAC-SHA256 of the raw body, key = the worker's --callback-secret>
// Usage: CALLBACK_SECRET=... node callback_receiver.js PORT [HOST]   (no npm packages needed)
// Answers 204 when the signature is right, 401 when it is not; CALLBACK_LOG, if set, is a file that gets
// one JSON line per verified callback.
const crypto = require('crypto')
const fs = require('fs')
const http = require('http')

const secret = process.env.CALLBACK_SECRET
if (!secret) {
  console.error('set CALLBACK_SECRET to the worker\'s --callback-secret')
  process.exit(2)
}
const [port = '8088', host = '127.0.0.1'] = process.argv.slice(2)
const MAX_BODY = 1024 * 1024

function verified (body, header) {
  const expected = Buffer.from('sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex'))
  const given = Buffer.from(header || '')
  // timingSafeEqual needs equal lengths; a length mismatch is a wrong signature anyway.
  return given.length === expected.length && crypto.timingSafeEqual(given, expected)
}

http.createServer((req, res) => {
  const chunks = []
  let size = 0
  req.on('data', (c) => {
    size += c.length
    if (size > MAX_BODY) req.destroy()
    else chunks.push(c)
  })
  req.on('end', () => {
    const body = Buffer.concat(chunks) // the raw bytes: re-encoding the JSON would change the HMAC
    if (req.method !== 'POST' || !verified(body, req.headers['x-imgworker-signature'])) {
      res.writeHead(401).end()
      return
    }
    const result = JSON.parse(body)
    const code = result.ok ? 'ok' : result.error.code
    // A real app updates its database here: upload result.id has its thumbnail at result.dst (or not).
    if (process.env.CALLBACK_LOG) {
      fs.appendFileSync(process.env.CALLBACK_LOG,
        JSON.stringify({ id: result.id ?? null, ok: result.ok, code, verified: true }) + '\n')
    }
    res.writeHead(204).end()
  })
}).listen(Number(port), host, () => console.log(`listening on ${host}:${port}`))
