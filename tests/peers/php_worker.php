<?php
// Interop peer: a php-gearman worker. Usage: php php_worker.php HOST PORT PREFIX
// Functions: PREFIX_up (uppercase), PREFIX_echo (identity), PREFIX_status (WORK_STATUS 1/2 then "done"),
// PREFIX_fail (sendFail). Prints "ready" once registered.
[$_, $host, $port, $prefix] = $argv;
$w = new GearmanWorker();
$w->addServer($host, (int)$port);
$w->addFunction("{$prefix}_up", fn($job) => strtoupper($job->workload()));
$w->addFunction("{$prefix}_echo", fn($job) => $job->workload());
$w->addFunction("{$prefix}_status", function ($job) {
    $job->sendStatus(1, 2);
    usleep(50000);
    return "done";
});
$w->addFunction("{$prefix}_fail", function ($job) {
    $job->sendFail();
    return "";
});
fwrite(STDOUT, "ready\n");
fflush(STDOUT);
while ($w->work() || $w->returnCode() == GEARMAN_IO_WAIT || $w->returnCode() == GEARMAN_NO_JOBS) {
    if ($w->returnCode() != GEARMAN_SUCCESS) {
        $w->wait();
    }
}
