-- Pre-signed unique webhooks, split between wrk's threads so that no two threads send the
-- same event. Each line of the file: "<Stripe-Signature>\t<body>".
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

function init(args)
   local nthreads = tonumber(args[2])
   requests = {}
   local i = 0
   for line in io.lines(args[1]) do
      if i % nthreads == id then
         local signature, body = line:match("^([^\t]*)\t(.*)$")
         requests[#requests + 1] = wrk.format("POST", nil,
            {["Stripe-Signature"] = signature, ["Content-Type"] = "application/json"}, body)
      end
      i = i + 1
   end
   n = 0
end

function request()
   n = n + 1
   return requests[(n - 1) % #requests + 1]
end
