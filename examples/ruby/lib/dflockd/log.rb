# frozen_string_literal: true

require "logger"

module DFlockd
  # The library's log, delivered to a Ruby Logger:
  #
  #   DFlockd.logger = Logger.new($stderr, level: :warn)
  #   DFlockd.logger = nil   # off (the default)
  #
  # Levels: DEBUG one message per request and reply, INFO each connection
  # opened and closed, WARN every renewal retry, leader redirect, reconnect
  # and deadline hit, ERROR every lost lease. Never a token or the secret.
  #
  # Threading: the library logs on whichever thread logs, including its own
  # threads (the notifier, which also emits the event engine's lines), which
  # Ruby does not know. The ffi gem hands such a call to its callback
  # dispatcher, which runs the Ruby block on a Ruby thread
  # while the library thread waits. That block does one thing: a
  # non-blocking push onto a bounded queue (a full queue drops the message
  # and counts it). A dedicated Ruby thread, "dflockd-log", drains the queue
  # into the Logger, so a slow Logger never holds up a library thread, and
  # messages arrive in order per thread. This is safe because every C call
  # that can log or touch a handle releases the GVL (see native.rb): no Ruby
  # thread holds the GVL while waiting for the library, so the dispatcher
  # always gets it. test/log_stress_test.rb runs it under load.
  #
  # The cost, measured (test/support/log_load.rb): a message from a library
  # thread waits for the GVL, up to Ruby's 100 ms thread quantum while
  # another Ruby thread computes, and the library thread waits with it (then
  # a renewal thread; now the notifier, so lost callbacks wait instead, and
  # beyond 1,024 waiting lines the library drops and counts them). WARN and
  # ERROR are rare (one per incident), but DEBUG is one message per renewal: with 20 leases renewed every 100 ms and one
  # busy Ruby thread, renewals fell from 800 to 20 in 4 s and 15 leases were
  # lost. So the library is asked for WARN and ERROR only, unless
  # `verbose: true` (DFlockd.set_logger) lets INFO and DEBUG through, for
  # debugging.
  #
  # The library is asked only for the levels the Logger's level lets
  # through when it is assigned: assign again after changing logger.level.
  # Installed, the log is uninstalled (and drained) at exit.
  module Log
    SEVERITY = { 1 => ::Logger::ERROR, 2 => ::Logger::WARN, 3 => ::Logger::INFO, 4 => ::Logger::DEBUG }.freeze
    QUEUE_SIZE = 10_000
    PROGNAME = "libdflockd"

    @mutex = Mutex.new
    @queue = SizedQueue.new(QUEUE_SIZE)
    @logger = nil
    @drainer = nil
    @dropped = 0
    @exit_hook = false

    # The C callback: runs with the GVL, on the thread that logged (if a Ruby
    # thread) or on an ffi callback thread. Never blocks, never raises.
    CALLBACK = FFI::Function.new(:void, %i[pointer int string]) do |_userdata, level, message|
      @queue.push([level, message], true)
    rescue ThreadError
      @dropped += 1
    end

    class << self
      attr_reader :logger

      def logger=(logger)
        set(logger)
      end

      # verbose: also INFO and DEBUG (see the cost above).
      def set(logger, verbose: false)
        @mutex.synchronize do
          max = logger ? max_level(logger) : 0
          max = [max, 2].min unless verbose
          if max.zero?
            Native.check(Native.dflockd_set_log(nil, nil, 0)) # no callback runs once this returns
            stop_drainer
            @logger = logger
          else
            @logger = logger
            start_drainer
            Native.check(Native.dflockd_set_log(CALLBACK, nil, max))
            unless @exit_hook
              @exit_hook = true
              at_exit { self.logger = nil }
            end
          end
        end
      end

      # Messages dropped because the queue was full (since the process began).
      def dropped
        @dropped
      end

      private

      # The most verbose library level the Logger lets through (0 = none).
      def max_level(logger)
        SEVERITY.select { |_, sev| sev >= logger.level }.keys.max || 0
      end

      def start_drainer
        return if @drainer&.alive?

        @drainer = Thread.new { drain }
        @drainer.name = "dflockd-log"
      end

      # Deliver what is queued, then end the drainer.
      def stop_drainer
        return unless @drainer

        @queue.push(:stop)
        @drainer.join
        @drainer = nil
      end

      def drain
        reported = 0
        loop do
          item = @queue.pop
          break if item == :stop

          level, message = item
          deliver(SEVERITY.fetch(level, ::Logger::UNKNOWN), message)
          next unless @dropped > reported

          deliver(::Logger::WARN, "#{@dropped - reported} log messages dropped (queue full)")
          reported = @dropped
        end
      end

      def deliver(severity, message)
        @logger&.add(severity, message.dup.force_encoding(Encoding::UTF_8), PROGNAME)
      rescue StandardError => e
        warn "dflockd: the logger raised #{e.class}: #{e.message}"
      end
    end
  end

  # Send the library's WARN and ERROR messages to a Logger (nil: off). See
  # DFlockd::Log.
  def self.logger=(logger)
    Log.logger = logger
  end

  # As logger=; verbose: true also sends INFO and DEBUG, which can delay
  # lease renewals while Ruby threads compute (see DFlockd::Log).
  def self.set_logger(logger, verbose: false)
    Log.set(logger, verbose: verbose)
  end

  def self.logger
    Log.logger
  end
end
