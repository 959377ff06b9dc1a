# frozen_string_literal: true

module DFlockd
  # Owns one C handle. Calls borrow it (#use); #close frees it once no call
  # is running (calling `unblock` meanwhile, e.g. to cancel a blocked
  # acquire), because the C API forbids freeing a handle under a call. If
  # never closed, FFI::AutoPointer frees it when garbage collected.
  class Handle
    def initialize(ptr, free_fn, what)
      @ptr = FFI::AutoPointer.new(ptr, Native.method(free_fn))
      @what = what
      @mutex = Mutex.new
      @idle = ConditionVariable.new
      @users = 0
      @closed = false
    end

    def use
      @mutex.synchronize do
        raise ClosedError.new("#{@what} is closed", STATUS[:closed]) if @closed

        @users += 1
      end
      begin
        yield @ptr
      ensure
        @mutex.synchronize do
          @users -= 1
          @idle.broadcast if @users.zero?
        end
      end
    end

    def closed?
      @mutex.synchronize { @closed }
    end

    def close(&unblock)
      @mutex.synchronize do
        return if @closed

        @closed = true
        until @users.zero?
          unblock&.call(@ptr)
          @idle.wait(@mutex, 0.01) # re-cancel: a cancel before the call starts is a no-op in C
        end
      end
      @ptr.free
      nil
    end
  end
end
