# frozen_string_literal: true

# DFlockd: Ruby binding of libdflockd (the C client of the dflockd lock
# server) over the ffi gem.
#
#   client = DFlockd::Client.new(servers: "127.0.0.1:6388")
#   client.lock("deploy") { |l| puts l.fence }   # released on block exit
#
# Runtime rules handled here: every C call on a handle is attached with
# `blocking: true` (other Ruby threads run meanwhile); acquire, wait, release
# and lost leases are awaited on the completion queue's fd with
# IO#wait_readable (events.rb), not in a blocking C call nor through a
# library-thread callback; the one callback that library threads do call, the log
# (DFlockd.logger=), only queues the message for a Ruby thread (see log.rb);
# C handles are freed by #close or, as a safety net, by FFI::AutoPointer when
# garbage collected, never while a call is running.
module DFlockd
end

require_relative "dflockd/native"
require_relative "dflockd/errors"
require_relative "dflockd/handle"
require_relative "dflockd/log"
require_relative "dflockd/events"
require_relative "dflockd/lease"
require_relative "dflockd/client"
require_relative "dflockd/test_server"
