<?php
// Benchmark peer: sequential doNormal round trips. Usage: php php_seq_client.php HOST PORT FUNCTION N
// Prints JSON {"n", "seconds", "lat_ms": [sorted latencies]}.
[$_, $host, $port, $fn, $n] = $argv;
$c = new GearmanClient();
$c->addServer($host, (int)$port);
$lat = [];
$t0 = hrtime(true);
for ($i = 0; $i < (int)$n; $i++) {
    $t = hrtime(true);
    $c->doNormal($fn, "x");
    if ($c->returnCode() != GEARMAN_SUCCESS) { fwrite(STDERR, "error " . $c->returnCode() . "\n"); exit(1); }
    $lat[] = (hrtime(true) - $t) / 1e6;
}
$secs = (hrtime(true) - $t0) / 1e9;
sort($lat);
echo json_encode(["n" => (int)$n, "seconds" => $secs, "lat_ms" => $lat]), "\n";
