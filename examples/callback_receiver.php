<?php
// Receive imgworker's HTTP callback in PHP and check its signature before trusting it.
// Deploy as the endpoint a job's "callback" URL names; the worker POSTs the result JSON with
//   X-Imgworker-Signature: sha256=<hex HMAC-SHA256 of the raw body, key = the worker's --callback-secret>
// Try it: CALLBACK_SECRET=... php -S 127.0.0.1:8088 examples/callback_receiver.php
// Answers 204 when the signature is right (the worker stops retrying), 401 when it is not (no retry either).
// CALLBACK_LOG, if set, is a file that gets one line per verified callback: the job's id, ok and code.

$secret = getenv('CALLBACK_SECRET');
if ($secret === false || $secret === '') {
    http_response_code(500);  // a 5xx: the worker retries, so nothing is lost while this is misconfigured
    exit;
}
$body = file_get_contents('php://input');  // the raw bytes: re-encoding the JSON would change the HMAC
$given = $_SERVER['HTTP_X_IMGWORKER_SIGNATURE'] ?? '';
$expected = 'sha256=' . hash_hmac('sha256', $body, $secret);
if ($_SERVER['REQUEST_METHOD'] !== 'POST' || !hash_equals($expected, $given)) {  // constant-time compare
    http_response_code(401);
    exit;
}

$result = json_decode($body, true);
$code = $result['ok'] ? 'ok' : $result['error']['code'];
// A real app updates its database here: the upload $result['id'] has its thumbnail at $result['dst'] (or not).
$log = getenv('CALLBACK_LOG');
if ($log !== false && $log !== '') {
    file_put_contents($log, json_encode(['id' => $result['id'] ?? null, 'ok' => $result['ok'], 'code' => $code,
                                         'verified' => true]) . "\n", FILE_APPEND | LOCK_EX);
}
http_response_code(204);
