<?php
// Soak peer: php-gearman foreground client. Usage: php soak_client.php HOST PORT JOBS.jsonl OUT.jsonl
// Each job line is {"i": N, "payload": "<json>", "unique": "..."}. Each job is submitted with doNormal and
// its unique id; a job that did not complete (job server lost, timeout) is resubmitted with backoff, which
// is safe because jobs are idempotent. Writes {"i", "outcome": "ok"|CODE|"LOST", "attempts"} per job.
[$_, $host, $port, $jobsFile, $outFile] = $argv;
$out = fopen($outFile, "w");
$c = new GearmanClient();
$c->addServer($host, (int)$port);
$c->setTimeout(60000);
foreach (file($jobsFile, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
    $job = json_decode($line, true);
    $outcome = "LOST";
    for ($attempt = 1; $attempt <= 40; $attempt++) {
        $body = @$c->doNormal("resize", $job["payload"], $job["unique"]);
        if ($c->returnCode() == GEARMAN_SUCCESS) {
            $result = json_decode($body, true);
            $outcome = ($result["ok"] ?? false) ? "ok" : ($result["error"]["code"] ?? "INTERNAL");
            break;
        }
        usleep((int)(min(2.0, 0.05 * (2 ** $attempt)) * 1e6));
    }
    fwrite($out, json_encode(["i" => $job["i"], "outcome" => $outcome, "attempts" => $attempt]) . "\n");
}
fclose($out);
