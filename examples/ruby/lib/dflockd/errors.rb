# frozen_string_literal: true

module DFlockd
  # The dflockd_status values (stable; only ever appended).
  STATUS = {
    ok: 0, null_parameter: 1, invalid_argument: 2, invalid_utf8: 3, buffer_too_small: 4,
    panic: 5, unsupported: 6, timeout: 7, server_error: 8, auth: 9, max_locks: 10,
    max_waiters: 11, limit_mismatch: 12, not_enqueued: 13, already_enqueued: 14,
    lease_expired: 15, draining: 16, not_leader: 17, protocol: 18, io: 19, deadline: 20,
    tls: 21, cancelled: 22, lease_lost: 23, not_held: 24, closed: 25, forked: 26
  }.freeze

  # Every failure of the library. #status is the C status code, #status_name
  # its C name, #leader the leader named by a cluster follower (NotLeaderError).
  class Error < StandardError
    attr_reader :status, :leader

    def initialize(message = nil, status = nil, leader = nil)
      super(message)
      @status = status
      @leader = leader
    end

    def status_name
      status && Native.dflockd_status_str(status)
    end
  end

  # A bad argument from the caller (empty key, limit 0, ...).
  class InvalidArgumentError < Error; end
  # A string that is not valid UTF-8.
  class InvalidUTF8Error < InvalidArgumentError; end
  # Not acquired within the timeout.
  class TimeoutError < Error; end
  # Authentication failed.
  class AuthError < Error; end
  # The server refused the request (plain `error`, and the specific refusals below).
  class ServerError < Error; end
  class MaxLocksError < ServerError; end
  class MaxWaitersError < ServerError; end
  class LimitMismatchError < ServerError; end
  class NotEnqueuedError < ServerError; end
  class AlreadyEnqueuedError < ServerError; end
  class LeaseExpiredError < ServerError; end
  class DrainingError < ServerError; end
  class NotLeaderError < ServerError; end
  # Reaching the server failed: I/O, deadline, protocol violation, TLS.
  class ConnectionError < Error; end
  class DeadlineError < ConnectionError; end
  class ProtocolError < ConnectionError; end
  class TLSError < ConnectionError; end
  # Another thread cancelled the call; nothing is held.
  class CancelledError < Error; end
  # The lease was lost: renewal failed until it would have expired.
  class LeaseLostError < Error; end
  # Nothing is held (released, never acquired).
  class NotHeldError < Error; end
  # The handle was closed.
  class ClosedError < Error; end
  # The handle was made before fork(); make a new client in the child.
  class ForkedError < Error; end
  # A bug in the library (a caught panic), or a feature it lacks.
  class InternalError < Error; end

  ERROR_CLASSES = {
    null_parameter: InvalidArgumentError, invalid_argument: InvalidArgumentError,
    invalid_utf8: InvalidUTF8Error, buffer_too_small: InternalError, panic: InternalError,
    unsupported: InternalError, timeout: TimeoutError, server_error: ServerError, auth: AuthError,
    max_locks: MaxLocksError, max_waiters: MaxWaitersError, limit_mismatch: LimitMismatchError,
    not_enqueued: NotEnqueuedError, already_enqueued: AlreadyEnqueuedError,
    lease_expired: LeaseExpiredError, draining: DrainingError, not_leader: NotLeaderError,
    protocol: ProtocolError, io: ConnectionError, deadline: DeadlineError, tls: TLSError,
    cancelled: CancelledError, lease_lost: LeaseLostError, not_held: NotHeldError, closed: ClosedError,
    forked: ForkedError
  }.transform_keys { |k| STATUS.fetch(k) }.freeze

  # Raise the exception for a failed status, taking the detail from (and
  # freeing) the C error object `err` (may be NULL).
  def self.raise_for(status, err)
    message = Native.dflockd_status_str(status)
    leader = nil
    unless err.null?
      message = Native.dflockd_error_message(err).dup.force_encoding(Encoding::UTF_8)
      leader = Native.dflockd_error_leader(err)&.dup
      Native.dflockd_error_free(err)
    end
    raise ERROR_CLASSES.fetch(status, Error).new(message, status, leader)
  end
end
