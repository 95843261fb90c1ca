--- dlm-lsp for Neovim: completion, ghost text and Instant Edit from a diffusion code model.
---
--- require('dlm_lsp').setup{ settings = { model = 'embedded' } }
---
--- Registers the server with vim.lsp.config/vim.lsp.enable (Neovim 0.11+), turns on the
--- built-in inline completion (Neovim 0.12+) with accept/next/previous keys, and adds the
--- :DlmInstantEdit, :DlmFillHoles and :DlmStatus commands (see :help dlm_lsp).
local M = {}

M.name = 'dlm_lsp'

--- Defaults; every key can be overridden in setup().
M.defaults = {
  cmd = { 'dlm-lsp' },
  filetypes = {
    'python', 'lua', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go',
    'rust', 'c', 'cpp', 'java', 'sh', 'ruby',
  },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml' },
  -- Server settings (section "dlm"): model, device, threads, contextTokens, maxTokens,
  -- temperature, confidenceThreshold, maxSteps, candidates, debounceMs, languages, ...
  settings = {},
  inline = true, -- ghost text through vim.lsp.inline_completion (Neovim 0.12+)
  -- accept_word / accept_line take the ghost text a word or a line at a time (as copilot.vim)
  keymaps = { accept = '<Tab>', next = '<M-]>', prev = '<M-[>',
              accept_word = '<M-Right>', accept_line = '<M-C-Right>' },
}

M.config = vim.deepcopy(M.defaults)

local function notify(msg, level)
  vim.notify('dlm-lsp: ' .. msg, level or vim.log.levels.INFO)
end

--- The dlm-lsp client attached to `bufnr` (default: current buffer), if any.
function M.client(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr or 0 })[1]
end

--- The start of `text` that accepting one `unit` ('word' or 'line') takes: blanks, then a
--- run of word characters or a run of other characters (`foo`, ` bar`, `(`, `):`); or the
--- rest of the line, or (at a line break) the break and the next line.
function M.next_part(text, unit)
  if unit == 'line' then
    return text:match('^\n?[^\n]*')
  end
  return text:match('^%s*[%w_]+') or text:match('^%s*[^%w_%s]+') or text
end

--- Accept the shown ghost text up to the end of its next `unit` ('word' or 'line'). Returns
--- false when none is shown (so a key can fall back to its own meaning). The rest of the
--- suggestion comes back on the next request, served from the server's typeahead.
function M.accept_part(unit, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function(item)
    local text = item.insert_text
    local win = vim.fn.bufwinid(bufnr)
    if type(text) ~= 'string' or win == -1 then
      return item -- a snippet, or no window: accept it whole
    end
    local crow, ccol = unpack(vim.api.nvim_win_get_cursor(win))
    crow = crow - 1
    local row, col, erow, ecol = crow, ccol, crow, ccol
    if item.range then
      row, col, erow, ecol = item.range:to_extmark()
    end
    -- only an item that starts on the cursor's line at or before it, and replaces nothing
    -- after it, can be cut without touching other text
    if row ~= crow or col > ccol or erow ~= crow or ecol > ccol then
      return item
    end
    local typed = vim.api.nvim_buf_get_text(bufnr, crow, col, crow, ccol, {})[1]
    if text:sub(1, #typed) ~= typed then
      return item
    end
    local rest = text:sub(#typed + 1)
    local part = M.next_part(rest, unit)
    if part == rest then
      return item
    end
    local lines = vim.split(part, '\n', { plain = true })
    vim.api.nvim_buf_set_text(bufnr, crow, ccol, crow, ccol, lines)
    vim.api.nvim_win_set_cursor(win, {
      crow + #lines, (#lines == 1 and ccol or 0) + #lines[#lines] })
    return nil
  end })
end

local function set_inline_keys(bufnr)
  local keys = M.config.keymaps
  for unit, key in pairs({ word = keys.accept_word, line = keys.accept_line }) do
    if key then
      vim.keymap.set('i', key, function()
        if not M.accept_part(unit, bufnr) then
          return key -- no ghost text: the key's own meaning (keycodes are replaced)
        end
      end, { buffer = bufnr, expr = true,
             desc = 'dlm-lsp: accept the next ' .. unit .. ' of the ghost text' })
    end
  end
  if keys.accept then
    vim.keymap.set('i', keys.accept, function()
      if not vim.lsp.inline_completion.get({ bufnr = bufnr }) then
        return keys.accept == '<Tab>' and '\t' or vim.keycode(keys.accept)
      end
    end, { buffer = bufnr, expr = true, desc = 'dlm-lsp: accept the ghost text' })
  end
  if keys.next then
    vim.keymap.set('i', keys.next, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = 1 })
    end, { buffer = bufnr, desc = 'dlm-lsp: next suggestion' })
  end
  if keys.prev then
    vim.keymap.set('i', keys.prev, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = -1 })
    end, { buffer = bufnr, desc = 'dlm-lsp: previous suggestion' })
  end
end

--- Create :DlmInstantEdit, :DlmFillHoles and :DlmStatus (idempotent).
function M.create_commands()
  vim.api.nvim_create_user_command('DlmInstantEdit', function(o)
    M.instant_edit(o.line1, o.line2, o.args ~= '' and o.args or nil)
  end, { range = true, nargs = '?', force = true,
         desc = 'dlm-lsp: regenerate the lines, optionally by instruction' })
  vim.api.nvim_create_user_command('DlmFillHoles', function(o)
    if o.range > 0 then
      M.fill_holes(o.line1, o.line2)
    else
      M.fill_holes()
    end
  end, { range = true, force = true, desc = 'dlm-lsp: fill ... / TODO / <HOLE> holes' })
  vim.api.nvim_create_user_command('DlmStatus', function()
    M.status()
  end, { force = true, desc = 'dlm-lsp: model state' })
end

--- Configure and enable the server. `opts` overrides M.defaults (deep merge).
function M.setup(opts)
  M.create_commands()
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  local cfg = M.config
  if vim.fn.has('nvim-0.11') == 0 then
    notify('needs Neovim 0.11 or newer (vim.lsp.config)', vim.log.levels.ERROR)
    return
  end
  if vim.fn.executable(cfg.cmd[1]) == 0 then
    notify(('`%s` was not found. Install the server with: pip install dlm-language-server'):format(cfg.cmd[1]),
      vim.log.levels.WARN)
  end
  vim.lsp.config(M.name, {
    cmd = cfg.cmd,
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    init_options = cfg.settings,
    settings = { dlm = cfg.settings },
  })
  vim.lsp.enable(M.name)
  local group = vim.api.nvim_create_augroup('dlm_lsp', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= M.name then
        return
      end
      if cfg.inline and vim.lsp.inline_completion then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        set_inline_keys(args.buf)
      end
    end,
  })
end

local function lsp_range(bufnr, line1, line2)
  local last = vim.api.nvim_buf_get_lines(bufnr, line2 - 1, line2, false)[1] or ''
  local client = M.client(bufnr)
  local enc = client and client.offset_encoding or 'utf-16'
  return {
    start = { line = line1 - 1, character = 0 },
    ['end'] = { line = line2 - 1, character = vim.str_utfindex(last, enc) },
  }
end

local function exec(bufnr, command, args, on_done)
  local client = M.client(bufnr)
  if not client then
    notify('the server is not attached to this buffer', vim.log.levels.WARN)
    return
  end
  client:exec_cmd({ title = command, command = command, arguments = { args } }, { bufnr = bufnr },
    function(err, result)
      if err then
        notify(command .. ' failed: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      elseif result == vim.NIL or result == nil then
        notify(command .. ': the model proposed no change that parses')
      end
      if on_done then
        on_done(err, result)
      end
    end)
end

--- Fill the holes (`...`, TODO bodies, <HOLE>) in lines line1..line2, or the whole buffer.
function M.fill_holes(line1, line2, on_done)
  local bufnr = vim.api.nvim_get_current_buf()
  local args = { uri = vim.uri_from_bufnr(bufnr) }
  if line1 and line2 then
    args.range = lsp_range(bufnr, line1, line2)
  end
  exec(bufnr, 'dlm.fillHoles', args, on_done)
end

--- Regenerate lines line1..line2, following `instruction` (asked for when nil).
function M.instant_edit(line1, line2, instruction, on_done)
  local bufnr = vim.api.nvim_get_current_buf()
  local function run(text)
    local args = { uri = vim.uri_from_bufnr(bufnr), range = lsp_range(bufnr, line1, line2) }
    if text and text ~= '' then
      args.instruction = text
    end
    exec(bufnr, 'dlm.instantEdit', args, on_done)
  end
  if instruction ~= nil then
    run(instruction)
  else
    vim.ui.input({ prompt = 'Instant Edit (optional instruction): ' }, function(text)
      if text ~= nil then -- nil: the prompt was cancelled
        run(text)
      end
    end)
  end
end

--- The server's dlm.status answer for `bufnr`'s client (nil when not attached).
function M.status_sync(bufnr, timeout_ms)
  local client = M.client(bufnr)
  if not client then
    return nil
  end
  local r = client:request_sync('workspace/executeCommand',
    { command = 'dlm.status', arguments = {} }, timeout_ms or 5000, bufnr or 0)
  return r and r.result or nil
end

--- Show the server's model state and counters.
function M.status()
  local client = M.client(0)
  if not client then
    notify('not running for this buffer')
    return
  end
  client:request('workspace/executeCommand', { command = 'dlm.status', arguments = {} },
    function(err, result)
      if err then
        notify('status failed: ' .. err.message, vim.log.levels.ERROR)
      else
        notify(('%s, model %s, %d model runs'):format(result.state, result.model, result.modelRuns))
      end
    end, 0)
end

return M
