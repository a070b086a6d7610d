#!/usr/bin/perl
# Interop peer: Perl Gearman::Client. Usage: perl perl_client.pl HOST:PORT FUNCTION < payload
# Prints lines: "status N D" per WORK_STATUS, then "complete <hex>" or "fail".
use strict;
use warnings;
use Gearman::Client;
binmode STDIN; binmode STDOUT;
my ($server, $fn) = @ARGV;
my $payload = do { local $/; <STDIN> } // '';
my $c = Gearman::Client->new(job_servers => [$server]);
my $ts = $c->new_task_set;
$ts->add_task($fn, \$payload, {
    on_complete => sub { my $r = shift; print "complete ", unpack("H*", $$r), "\n"; },
    on_fail     => sub { print "fail\n"; },
    on_status   => sub { my ($n, $d) = @_; print "status $n $d\n"; },
    timeout     => 20,
});
$ts->wait(timeout => 20);
my $r = $c->do_task($fn, \$payload, { timeout => 20 });
print defined $r ? "do_task " . unpack("H*", $$r) . "\n" : "do_task undef\n";
