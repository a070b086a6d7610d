<?php
// Ask imgworker for an image's facts from PHP (php-gearman): size, format, placeholders, colours, hash.
// Usage: php info.php HOST:PORT SRC_URL [FACT...]   (meta thumbhash blurhash dominant phash; default meta)
// Exit: 0 ok (prints the result JSON), 1 the job failed (prints code and message), 2 no job server.
$server = $argv[1] ?? '127.0.0.1:4730';
$src = $argv[2] ?? null;
$facts = array_slice($argv, 3) ?: ['meta'];
[$host, $port] = explode(':', $server);

$payload = json_encode(['src' => $src, 'analyze' => array_values($facts)]);
try {
    $client = new GearmanClient();
    $client->addServer($host, (int)$port);
    $client->setTimeout(120000);  // ms
    $body = $client->doNormal('info', $payload);
} catch (GearmanException $e) {
    fwrite(STDERR, "gearman error: " . $e->getMessage() . "\n");
    exit(2);
}
if ($client->returnCode() !== GEARMAN_SUCCESS) {
    fwrite(STDERR, "gearman error: " . $client->error() . " (returnCode " . $client->returnCode() . ")\n");
    exit(2);
}
$result = json_decode($body, true);
echo $body, "\n";
if (!$result['ok']) {
    $err = $result['error'];
    fwrite(STDERR, "{$err['code']}: {$err['message']}\n");
    exit(1);
}
$meta = $result['analysis']['meta'] ?? null;
if ($meta) {
    fwrite(STDERR, "{$meta['format']} {$meta['width']}x{$meta['height']}\n");
}
exit(0);
