<?php
// Benchmark peer: no-op php-gearman worker. Usage: php php_noop_worker.php HOST PORT FUNCTION
[$_, $host, $port, $fn] = $argv;
$w = new GearmanWorker();
$w->addServer($host, (int)$port);
$w->addFunction($fn, fn($job) => "");
fwrite(STDOUT, "ready\n");
fflush(STDOUT);
while ($w->work());
