<?php
// Submit one imgworker resize job from PHP (php-gearman) and tell success from failure.
// Usage: php resize.php HOST:PORT SRC_URL DST_URL WIDTH
// Exit: 0 ok (prints the result JSON), 1 the job failed (prints code and message), 2 no job server.
[$_, $server, $src, $dst, $width] = $argv + [null, '127.0.0.1:4730', null, null, 512];
[$host, $port] = explode(':', $server);

$payload = json_encode(['src' => $src, 'dst' => $dst, 'width' => (int)$width]);
try {
    $client = new GearmanClient();
    $client->addServer($host, (int)$port);  // throws GearmanException when the server is unreachable
    $client->setTimeout(120000);  // ms; without it a dead worker pool would block forever
    $body = $client->doNormal('resize', $payload);
} catch (GearmanException $e) {
    fwrite(STDERR, "gearman error: " . $e->getMessage() . "\n");
    exit(2);
}

if ($client->returnCode() !== GEARMAN_SUCCESS) {
    // Transport-level failure: no job server, timeout, WORK_FAIL. Safe to retry.
    fwrite(STDERR, "gearman error: " . $client->error() . " (returnCode " . $client->returnCode() . ")\n");
    exit(2);
}
$result = json_decode($body, true);
if (!$result['ok']) {
    $err = $result['error'];
    fwrite(STDERR, "{$err['code']}: {$err['message']}" . ($err['retryable'] ? " (retryable)" : "") . "\n");
    echo $body, "\n";
    exit(1);
}
echo $body, "\n";
exit(0);
