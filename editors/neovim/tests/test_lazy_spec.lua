-- The README's lazy.nvim spec, in lazy.nvim's order: startup finishes (plugin/ files of
-- 'runtimepath' are sourced), then the spec's config() adds editors/neovim to
-- 'runtimepath' and calls setup(). Commands, help tags and :checkhealth must all work then.
-- lazy_init.lua runs the same checks after lazy.nvim's own loader instead of this emulation.
--   DLM_TEST_CMD="python -m dlm_lsp" nvim --headless -u NONE -i NONE \
--     -c "luafile editors/neovim/tests/test_lazy_spec.lua"
local repo = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h:h:h')
local cmd = vim.split(os.getenv('DLM_TEST_CMD') or 'dlm-lsp', ' ', { trimempty = true })
local failures = 0
local function check(name, ok, detail)
  io.stdout:write((ok and 'ok   ' or 'FAIL ') .. name .. (detail and ('  ' .. detail) or '') .. '\n')
  if not ok then
    failures = failures + 1
  end
end

if vim.g.dlm_lazy_loaded == nil then
  -- what the spec's `config = function(plugin) ... end` does, with plugin.dir = the checkout
  local plugin = { dir = repo }
  vim.opt.rtp:append(plugin.dir .. '/editors/neovim')
  require('dlm_lsp').setup({ cmd = cmd, settings = { model = 'embedded' } })
else -- lazy_init.lua ran lazy.nvim's own loader first
  check("lazy.nvim's loader ran the spec's config", vim.g.dlm_lazy_loaded)
end

for _, name in ipairs({ 'DlmStatus', 'DlmFillHoles', 'DlmInstantEdit' }) do
  check(':' .. name .. ' is defined', vim.fn.exists(':' .. name) == 2)
end
local ok, err = pcall(vim.cmd, 'help dlm_lsp-settings')
check(':help dlm_lsp-settings opens', ok and vim.bo.buftype == 'help', tostring(err))
pcall(vim.cmd, 'helpclose')
ok, err = pcall(vim.cmd, 'checkhealth dlm_lsp')
local report = ok and table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n') or ''
check(':checkhealth dlm_lsp runs', ok, tostring(err))
check('health names the server and its version', report:find('server: dlm%-lsp %d') ~= nil,
  report:sub(1, 400))
check('health names the model setting', report:find('embedded') ~= nil)
io.stdout:write(('%d failed\n'):format(failures))
vim.cmd(failures == 0 and 'qall!' or 'cquit! 1')
