#!/usr/bin/perl
# Soak peer: Perl Gearman::Client foreground client. Usage: perl soak_client.pl HOST:PORT JOBS.jsonl OUT.jsonl
# Same protocol as soak_client.php: do_task with the job's uniq; a job that did not complete (undef: job
# server lost, timeout) is resubmitted with backoff. Writes {"i", "outcome", "attempts"} per job.
use strict;
use warnings;
use Gearman::Client;
use JSON::PP;
use Time::HiRes qw(sleep);
my ($server, $jobs_file, $out_file) = @ARGV;
my $json = JSON::PP->new->canonical;
open(my $in, "<", $jobs_file) or die "cannot read $jobs_file: $!";
open(my $out, ">", $out_file) or die "cannot write $out_file: $!";
$out->autoflush(1);
my $c = Gearman::Client->new(job_servers => [$server]);
while (my $line = <$in>) {
    next unless $line =~ /\S/;
    my $job = $json->decode($line);
    my $payload = $job->{payload};
    my ($outcome, $attempt) = ("LOST", 0);
    while (++$attempt <= 40) {
        # Gearman::Client 2.004 dies (ResponseParser "eof") when the job server goes away mid-task:
        # catch it and start over with a fresh client object.
        my $r = eval { $c->do_task("resize", \$payload, { uniq => $job->{unique}, timeout => 60 }) };
        if ($@) {
            $c = Gearman::Client->new(job_servers => [$server]);
        }
        elsif (defined $r) {
            my $res = eval { $json->decode($$r) } || {};
            $outcome = $res->{ok} ? "ok" : ($res->{error}{code} // "INTERNAL");
            last;
        }
        my $delay = 0.05 * 2**$attempt;
        sleep($delay > 2 ? 2 : $delay);
    }
    print $out $json->encode({ i => $job->{i}, outcome => $outcome, attempts => $attempt }), "\n";
}
close($out);
