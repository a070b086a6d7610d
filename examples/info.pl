#!/usr/bin/env perl
# Ask imgworker for an image's facts from Perl (Gearman::Client); nothing is written.
# Usage: perl info.pl HOST:PORT SRC_URL [FACT...]   (meta thumbhash blurhash dominant phash; default meta)
# Exit: 0 ok (prints the result JSON), 1 the job failed (prints code and message), 2 no job server.
use strict;
use warnings;
use Gearman::Client;
use JSON::PP;

my ($server, $src, @facts) = @ARGV;
@facts = ('meta') unless @facts;
my $client = Gearman::Client->new(job_servers => [$server]);
my $ref = $client->do_task('info', encode_json({src => $src, analyze => \@facts}), {timeout => 120});
if (!defined $ref) {
    print STDERR "job did not complete: no job server reachable, timeout or WORK_FAIL\n";
    exit 2;
}
my $result = decode_json($$ref);
print $$ref, "\n";
if (!$result->{ok}) {
    printf STDERR "%s: %s\n", $result->{error}{code}, $result->{error}{message};
    exit 1;
}
exit 0;
