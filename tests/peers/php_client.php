<?php
// Interop peer: php-gearman client. Usage: php php_client.php HOST PORT MODE FUNCTION
// Payload is read from stdin. Prints one JSON object.
//   MODE normal:     doNormal; {"ret": returnCode, "fail": bool, "result": base64, "status": [[n,d],...]}
//   MODE background: doBackground then jobStatus polling until done; {"handle", "statuses": [...]}
[$_, $host, $port, $mode, $fn] = $argv;
$payload = stream_get_contents(STDIN);
$c = new GearmanClient();
$c->addServer($host, (int)$port);
$c->setTimeout(20000);
if ($mode === "normal") {
    $statuses = [];
    $c->setStatusCallback(function ($task) use (&$statuses) {
        $statuses[] = [$task->taskNumerator(), $task->taskDenominator()];
    });
    // doNormal does not surface WORK_STATUS; use a task so the status callback fires.
    $result = null;
    $c->setCompleteCallback(function ($task) use (&$result) { $result = $task->data(); });
    $failed = false;
    $c->setFailCallback(function ($task) use (&$failed) { $failed = true; });
    $c->addTask($fn, $payload);
    $ok = $c->runTasks();
    $direct = $c->doNormal($fn, $payload);
    echo json_encode([
        "ret" => $c->returnCode(), "fail" => $failed, "work_fail" => $c->returnCode() == GEARMAN_WORK_FAIL,
        "result" => base64_encode((string)$result), "direct" => base64_encode((string)$direct),
        "status" => $statuses,
    ]), "\n";
} else {
    $handle = $c->doBackground($fn, $payload);
    $statuses = [];
    for ($i = 0; $i < 200; $i++) {
        $st = $c->jobStatus($handle);
        $statuses[] = $st;
        if (!$st[0]) break;
        usleep(20000);
    }
    echo json_encode(["ret" => $c->returnCode(), "handle" => $handle, "statuses" => $statuses]), "\n";
}
