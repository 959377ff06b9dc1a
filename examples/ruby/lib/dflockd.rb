# frozen_string_literal: true

# DFlockd: Ruby binding of libdflockd (the C client of the dflockd lock
# server) over the ffi gem.
#
#   client = DFlockd::Client.new(servers: "127.0.0.1:6388")
#   client.lock("deploy") { |l| puts l.fence }   # released on block exit
#
# Runtime rules handled here: every blocking C call is attached with
# `blocking: true` (other Ruby threads run meanwhile); no C library thread
# ever calls into Ruby (the lost state is awaited with dflockd_lease_wait_lost
# on a Ruby thread); C handles are freed by #close or, as a safety net, by
# FFI::AutoPointer when garbage collected, never while a call is running.
module DFlockd
end

require_relative "dflockd/native"
require_relative "dflockd/errors"
require_relative "dflockd/handle"
require_relative "dflockd/lease"
require_relative "dflockd/client"
require_relative "dflockd/test_server"
