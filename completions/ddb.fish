# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ddb_global_optspecs
    string join \n c/config= addr= format= q/quiet v/verbose h/help V/version
end

function __fish_ddb_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ddb_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ddb_using_subcommand
    set -l cmd (__fish_ddb_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ddb -n "__fish_ddb_needs_command" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_needs_command" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_needs_command" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_needs_command" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_needs_command" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_needs_command" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_needs_command" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "server" -d 'Run a node (storage daemon) in the foreground'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "init" -d 'Start every node of the cluster file and form the cluster'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "status" -d 'Show every node: addresses, shard, role, state, map version, keys'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "ring" -d 'Show how the hash ring divides keys among shards, or which shard owns a key'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "promote" -d 'Make a replica the primary of its shard (--force: the primary is down)'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "stop" -d 'Stop the named nodes (default: all) and wait for them to exit'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "query" -d 'Run SQL statements and print their results'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c ddb -n "__fish_ddb_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ddb -n "__fish_ddb_using_subcommand server" -l data-dir -d 'The node\'s data directory (created if missing; locked while the node runs)' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand server" -l listen -d 'Address of the internal RPC listener (peers and the CLI)' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l sql-listen -d 'Address of the PostgreSQL protocol listener' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l name -d 'The node\'s name [default: the RPC address]' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l lock-timeout-ms -d 'How long a transaction waits for a lock before it fails with SQLSTATE 55P03' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l prepared-timeout-ms -d 'How long a transaction may stay prepared (two-phase commit) before the node asks its anchor for the outcome' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l log-retention -d 'On a replicated shard: how many log entries a primary keeps behind its head at most for a lagging replica (one further behind is sent a snapshot), and how many a replica keeps behind its applied LSN (it never drops one it has not applied)' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l max-connections -d 'Most connections served at once, on each of the two ports. On the SQL port one more is told SQLSTATE 53300 (too_many_connections) after its startup message; on the RPC port it waits in the backlog for a free place' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l startup-timeout-ms -d 'How long a new connection has to finish its startup (SQL port: startup message and authentication) or its handshake (RPC port) before it is closed' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l max-frame -d 'The largest frame read on the RPC port, in bytes (at least 1024). Larger messages travel as several frames; a frame announced larger is refused before it is read' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l max-message -d 'The largest message read on the RPC port, joined from its frames, in bytes' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l max-joined -d 'The most bytes of messages being joined from frames that the node holds at once, over all its RPC connections (at least --max-message). A connection whose next piece does not fit waits for room at most --frame-timeout-ms, then is closed' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l frame-timeout-ms -d 'How long a frame (or a message of several) begun on the RPC port may take to arrive in full before the connection is closed' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l send-timeout-ms -d 'How long one write of a query\'s result may wait for a client that does not read it (a SQL client, or an RPC caller such as `ddb query`); past it the connection is closed, rolling back its transaction and releasing its locks' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand server" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand server" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand server" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand server" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand server" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand server" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand init" -l timeout -d 'How long to wait for each node to start, in seconds' -r
complete -c ddb -n "__fish_ddb_using_subcommand init" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand init" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand init" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand init" -l dry-run -d 'Print the plan (nodes, shards, ring shares) and start nothing'
complete -c ddb -n "__fish_ddb_using_subcommand init" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand init" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand init" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand init" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand status" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand status" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand status" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand status" -l txns -d 'Add transaction counters per node: commits in one phase and in two phases as gateway, the average time of each two-phase step, and decision records kept'
complete -c ddb -n "__fish_ddb_using_subcommand status" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand status" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand status" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand status" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand ring" -l key -d 'Show the shard that owns this primary key value' -r
complete -c ddb -n "__fish_ddb_using_subcommand ring" -l table -d 'The table whose primary key type reads VALUE (default: an integer if VALUE is one, else text)' -r
complete -c ddb -n "__fish_ddb_using_subcommand ring" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand ring" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand ring" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand ring" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand ring" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand ring" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand ring" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l expected-primary -d 'Refuse unless the shard\'s primary is this node' -r
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l timeout -d 'How long to wait for NODE to take writes, in seconds' -r
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l drain-ms -d 'Switchover: how long the old primary lets the commits in flight finish, in milliseconds' -r
complete -c ddb -n "__fish_ddb_using_subcommand promote" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l force -d 'The primary is down: fence NODE and promote it (failover)'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l allow-data-loss -d 'Promote even when committed writes may be lost (NODE not in sync, or async replication)'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -l dry-run -d 'Run the checks, print the plan, change nothing'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand promote" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand stop" -l timeout -d 'How long to wait for each node to exit, in seconds' -r
complete -c ddb -n "__fish_ddb_using_subcommand stop" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand stop" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand stop" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand stop" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand stop" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand stop" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand stop" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand query" -s f -l file -d 'Read the SQL from a file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand query" -l connect-timeout-ms -d 'How long to wait for the node to answer when connecting' -r
complete -c ddb -n "__fish_ddb_using_subcommand query" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand query" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand query" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand query" -l no-header -d 'Omit the header line of csv/tsv output'
complete -c ddb -n "__fish_ddb_using_subcommand query" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand query" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand query" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand query" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand completions" -s c -l config -d 'The cluster file' -r -F
complete -c ddb -n "__fish_ddb_using_subcommand completions" -l addr -d 'A node\'s RPC address (HOST:PORT), instead of the cluster file: status, ring and stop act on that node alone (and what its map says); init refuses it' -r
complete -c ddb -n "__fish_ddb_using_subcommand completions" -l format -d 'Output format [default: table on a terminal, tsv when piped]' -r -f -a "table\t''
json\t''
ndjson\t''
csv\t''
tsv\t''"
complete -c ddb -n "__fish_ddb_using_subcommand completions" -s q -l quiet -d 'Print only data: no row counts or command tags'
complete -c ddb -n "__fish_ddb_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c ddb -n "__fish_ddb_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ddb -n "__fish_ddb_using_subcommand completions" -s V -l version -d 'Print version'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "server" -d 'Run a node (storage daemon) in the foreground'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "init" -d 'Start every node of the cluster file and form the cluster'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "status" -d 'Show every node: addresses, shard, role, state, map version, keys'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "ring" -d 'Show how the hash ring divides keys among shards, or which shard owns a key'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "promote" -d 'Make a replica the primary of its shard (--force: the primary is down)'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "stop" -d 'Stop the named nodes (default: all) and wait for them to exit'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "query" -d 'Run SQL statements and print their results'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c ddb -n "__fish_ddb_using_subcommand help; and not __fish_seen_subcommand_from server init status ring promote stop query completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
