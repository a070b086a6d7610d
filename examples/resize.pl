#!/usr/bin/env perl
# Submit one imgworker resize job from Perl (Gearman::Client) and tell success from failure.
# Usage: perl resize.pl HOST:PORT SRC_URL DST_URL WIDTH
# Exit: 0 ok (prints the result JSON), 1 the job failed (prints code and message), 2 no job server.
use strict;
use warnings;
use Gearman::Client;
use JSON::PP;

my ($server, $src, $dst, $width) = @ARGV;
my $client = Gearman::Client->new(job_servers => [$server]);

my $payload = encode_json({src => $src, dst => $dst, width => $width + 0});
my $transport_error;
my $ref = $client->do_task('resize', $payload, {
    timeout => 120,
    on_fail => sub { $transport_error = "job did not complete: no job server reachable, timeout or WORK_FAIL" },
});
if (!defined $ref) {
    print STDERR ($transport_error // "no job server reachable"), "\n";
    exit 2;
}
my $result = decode_json($$ref);
if (!$result->{ok}) {
    my $err = $result->{error};
    printf STDERR "%s: %s%s\n", $err->{code}, $err->{message}, ($err->{retryable} ? " (retryable)" : "");
    print $$ref, "\n";
    exit 1;
}
print $$ref, "\n";
exit 0;
