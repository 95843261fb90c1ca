-- Headless end-to-end test of the plugin against the real dlm-lsp server.
--   DLM_TEST_MODEL=<checkpoint> DLM_TEST_CMD="python -m dlm_lsp" \
--     nvim --headless -u NONE -i NONE -c "luafile editors/neovim/tests/test_dlm_lsp.lua"
-- The steps run in a coroutine that yields to Neovim's main loop while it waits, so typed
-- keys (insert mode, <Tab>) are processed as they are for a user.
-- The checkpoint is a "parrot" test model that writes `1` in every slot, so what reaches the
-- buffer is known. Prints one line per check and exits non-zero if any check fails.
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')
vim.opt.rtp:prepend(root)
vim.cmd('filetype on')
vim.cmd('runtime plugin/dlm_lsp.lua')

local model = assert(os.getenv('DLM_TEST_MODEL'), 'set DLM_TEST_MODEL')
local cmd = vim.split(os.getenv('DLM_TEST_CMD') or 'dlm-lsp', ' ', { trimempty = true })
local failures = 0
local function check(name, ok, detail)
  io.stdout:write((ok and 'ok   ' or 'FAIL ') .. name .. (detail and ('  ' .. detail) or '') .. '\n')
  if not ok then
    failures = failures + 1
  end
end

local co
--- Yield to the main loop until cond() holds or `ms` pass; returns cond().
local function wait(ms, cond)
  local deadline = vim.uv.now() + ms
  local timer = assert(vim.uv.new_timer())
  timer:start(20, 20, vim.schedule_wrap(function()
    if timer:is_active() and (cond() or vim.uv.now() > deadline) then
      timer:stop()
      timer:close()
      local ok, err = coroutine.resume(co)
      if not ok then
        io.stdout:write('FAIL ' .. tostring(err) .. '\n')
        vim.cmd('cquit! 2')
      end
    end
  end))
  coroutine.yield()
  return cond() and true or false
end

local dlm = require('dlm_lsp')
dlm.setup({
  cmd = cmd,
  settings = { model = model, maxTokens = 6, maxBlockTokens = 10, debounceMs = 0 },
})

co = coroutine.create(function()
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  vim.fn.writefile({
    'import math',
    '',
    'def area(r):',
    '    return math.pi * ',
    '',
    'class Shape:',
    '    def size(self):',
    '        ...',
    '',
    'def volume(r):',
    '    return r',
  }, dir .. '/demo.py')
  vim.cmd('edit ' .. dir .. '/demo.py')
  local buf = vim.api.nvim_get_current_buf()

  check('plugin attaches the server', wait(30000, function() return dlm.client(buf) ~= nil end))
  local client = dlm.client(buf)
  local function status()
    local r = client:request_sync('workspace/executeCommand',
      { command = 'dlm.status', arguments = {} }, 5000, buf)
    return r and r.result or {}
  end
  check('model loads', wait(60000, function() return status().state == 'ready' end),
    status().state)

  -- 1. Completion items arrive, and the first one's edit lands in the buffer.
  local t0 = vim.uv.hrtime()
  local resp = client:request_sync('textDocument/completion', {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    position = { line = 3, character = 21 },
  }, 20000, buf)
  local ms = (vim.uv.hrtime() - t0) / 1e6
  local items = resp and resp.result and (resp.result.items or resp.result) or {}
  check('completion items arrive', #items > 0, ('%d items in %.0f ms'):format(#items, ms))
  if #items > 0 then
    vim.lsp.util.apply_text_edits({ items[1].textEdit }, buf, client.offset_encoding)
    local line = vim.api.nvim_buf_get_lines(buf, 3, 4, false)[1]
    check('completion edit reaches the buffer', line:match('^    return math%.pi %* 1+') ~= nil, line)
  end

  -- 2. Ghost text appears in insert mode and <Tab> accepts it into the buffer.
  local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
  vim.api.nvim_win_set_cursor(0, { 11, 12 })
  vim.api.nvim_feedkeys('A *', 'n', false) -- insert mode at the end of `    return r`, type " *"
  local shown = wait(20000, function()
    return #vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, {}) > 0
  end)
  check('inline ghost text appears', shown)
  local ghost = ''
  if shown then
    local mark = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })[1]
    for _, chunk in ipairs(mark[4].virt_text or {}) do
      ghost = ghost .. chunk[1]
    end
  end
  check('ghost text is the model output', ghost:match('1') ~= nil, vim.inspect(ghost))
  vim.api.nvim_feedkeys(vim.keycode('<Tab>'), 'm', false)
  local function line11() return vim.api.nvim_buf_get_lines(buf, 10, 11, false)[1] or '' end
  check('<Tab> accepts the ghost text', wait(5000, function()
    return line11():match('^    return r %*.*1') ~= nil
  end), line11())
  vim.api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
  wait(2000, function() return vim.api.nvim_get_mode().mode == 'n' end)

  -- 2b. A word or a line of the ghost text at a time. The parrot writes one token, so the
  -- answers are rewritten on their way in: each becomes the rest of a two-line suggestion
  -- after what was typed since the anchor, as the server's typeahead would serve it.
  local parts = {
    { 'foo(bar)', 'word', 'foo' }, { ' = 1', 'word', ' =' }, { '):\n  x', 'word', '):' },
    { '\n    return y', 'word', '\n    return' }, { '  ', 'word', '  ' },
    { 'abc\ndef', 'line', 'abc' }, { '\ndef\nghi', 'line', '\ndef' },
  }
  for _, c in ipairs(parts) do
    local got = dlm.next_part(c[1], c[2])
    check(('next %s of %s is %s'):format(c[2], vim.inspect(c[1]), vim.inspect(c[3])), got == c[3],
      vim.inspect(got))
  end
  local suggestion, anchor = 'y = foo(bar, baz)\n    return y', { 4, 1 }
  local request = client.request
  client.request = function(self, method, params, handler, b)
    if method ~= 'textDocument/inlineCompletion' then
      return request(self, method, params, handler, b)
    end
    return request(self, method, params, function(err, result, ...)
      local row, col = unpack(vim.api.nvim_win_get_cursor(0))
      local typed = table.concat(
        vim.api.nvim_buf_get_text(buf, anchor[1], anchor[2], row - 1, col, {}), '\n')
      for _, item in ipairs(result and (result.items or result) or {}) do
        item.insertText = suggestion:sub(#typed + 1)
      end
      handler(err, result, ...)
    end, b)
  end
  local function ghost_shown()
    return #vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, {}) > 0
  end
  local function line(n) return vim.api.nvim_buf_get_lines(buf, n - 1, n, false)[1] or '' end
  vim.api.nvim_win_set_cursor(0, { 5, 0 })
  vim.api.nvim_feedkeys('Ax', 'n', false) -- insert on the empty line 5, type "x"
  local steps = {
    { '<M-Right>', 'xy' }, { '<M-Right>', 'xy =' }, { '<M-C-Right>', 'xy = foo(bar, baz)' },
  }
  for _, step in ipairs(steps) do
    check('ghost text before ' .. step[1], wait(20000, ghost_shown))
    vim.api.nvim_feedkeys(vim.keycode(step[1]), 'm', false)
    check(step[1] .. ' accepts up to ' .. step[2], wait(5000, function()
      return line(5) == step[2]
    end), line(5))
  end
  check('ghost text before the last line', wait(20000, ghost_shown))
  vim.api.nvim_feedkeys(vim.keycode('<M-C-Right>'), 'm', false)
  check('<M-C-Right> at a line end takes the break and the next line', wait(5000, function()
    return line(6) == '    return y'
  end), line(6))
  check('the cursor follows the accepted text',
    vim.deep_equal(vim.api.nvim_win_get_cursor(0), { 6, 12 }),
    vim.inspect(vim.api.nvim_win_get_cursor(0)))
  client.request = request
  vim.api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
  wait(2000, function() return vim.api.nvim_get_mode().mode == 'n' end)
  vim.api.nvim_buf_set_lines(buf, 4, 6, false, { '' }) -- the file as the later steps expect

  -- 3. :DlmFillHoles replaces the `...` body through workspace/applyEdit.
  local done = false
  dlm.fill_holes(nil, nil, function() done = true end)
  wait(20000, function() return done end)
  local body = vim.api.nvim_buf_get_lines(buf, 7, 8, false)[1]
  check('fill holes edits the buffer', body ~= '        ...' and body:match('1') ~= nil, body)

  -- 4. Instant Edit with an instruction regenerates the selected line.
  done = false
  dlm.instant_edit(4, 4, 'multiply by two', function() done = true end)
  wait(20000, function() return done end)
  local edited = vim.api.nvim_buf_get_lines(buf, 3, 4, false)[1]
  check('instant edit changes the selection', edited:match('1') ~= nil, edited)
  -- the whole line went to the server (column 0 to its end): its indentation stays
  check('instant edit keeps the line in its block', edited:match('^    %S') ~= nil, edited)

  io.stdout:write(('%d failed\n'):format(failures))
  client:stop(true)
  vim.cmd((failures == 0 and 'qall!' or 'cquit! 1'))
end)

-- A failed check or an error must never leave Neovim running.
local ok, err = coroutine.resume(co)
if not ok then
  io.stdout:write('FAIL ' .. tostring(err) .. '\n')
  vim.cmd('cquit! 2')
end
vim.defer_fn(function()
  io.stdout:write('FAIL timed out\n')
  vim.cmd('cquit! 3')
end, 150000)
