#!/usr/bin/perl
# mkmmdb.pl OUT NETWORK=COUNTRY,CONTINENT,ASN ...: writes a small MaxMind DB
# with the fields Aviary reads (country.iso_code, continent.code,
# autonomous_system_number), for the tests. Needs libmaxmind-db-writer-perl.
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

my $out = shift or die "usage: mkmmdb.pl OUT NETWORK=CC,CONT,ASN ...\n";
my %types = (
    country => 'map', continent => 'map', iso_code => 'utf8_string', code => 'utf8_string',
    autonomous_system_number => 'uint32',
);
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 24, database_type => 'Aviary-Test', languages => ['en'],
    description => { en => 'Aviary test database' }, map_key_type_callback => sub { $types{ $_[0] } },
    alias_ipv6_to_ipv4 => 1,
    remove_reserved_networks => 0, # the tests use private and documentation ranges
);
for my $arg (@ARGV) {
    my ($net, $rest) = split /=/, $arg, 2;
    my ($cc, $cont, $asn) = split /,/, $rest;
    # an IPv4 network goes where readers look for IPv4 in an IPv6 tree: ::a.b.c.d
    if ($net =~ m{^(\d+\.\d+\.\d+\.\d+)/(\d+)$}) {
        $net = "::$1/" . ($2 + 96);
    }
    my %rec;
    $rec{country} = { iso_code => $cc } if $cc;
    $rec{continent} = { code => $cont } if $cont;
    $rec{autonomous_system_number} = $asn + 0 if $asn;
    $tree->insert_network($net, \%rec);
}
open my $fh, '>:raw', $out or die "mkmmdb.pl: $out: $!\n";
$tree->write_tree($fh);
close $fh or die "mkmmdb.pl: $out: $!\n";
