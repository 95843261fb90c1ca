-- An init.lua that installs the plugin with lazy.nvim's own loader, as the README's spec does,
-- with the plugin's `dir` pointed at this checkout (lazy.nvim cannot clone here). Then, once
-- startup is over, the same checks as test_lazy_spec.lua run against what lazy.nvim loaded.
--   DLM_LAZY_NVIM=/path/to/lazy.nvim DLM_TEST_CMD="python -m dlm_lsp" \
--     nvim --headless -i NONE -u editors/neovim/tests/lazy_init.lua
local lazy_path = assert(os.getenv('DLM_LAZY_NVIM'), 'set DLM_LAZY_NVIM to a lazy.nvim checkout')
local repo = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h:h:h')
local cmd = vim.split(os.getenv('DLM_TEST_CMD') or 'dlm-lsp', ' ', { trimempty = true })
local state = vim.fn.tempname()
vim.opt.rtp:prepend(lazy_path)

require('lazy').setup({
  {
    dir = repo, -- the README's 'dlm-lsp/dlm-lsp', here as a local directory
    name = 'dlm-lsp',
    config = function(plugin) -- the README's config function, unchanged but for `cmd`
      vim.opt.rtp:append(plugin.dir .. '/editors/neovim')
      require('dlm_lsp').setup({ cmd = cmd, settings = { model = 'embedded' } })
    end,
  },
}, {
  root = state .. '/lazy',
  lockfile = state .. '/lazy-lock.json',
  install = { missing = false },
  checker = { enabled = false },
  change_detection = { enabled = false },
  rocks = { enabled = false },
  -- lazy.nvim keeps <prefix>/lib/nvim (the bundled parsers) by the path of the nvim binary;
  -- the test install starts nvim through its loader, so name that directory here
  performance = { rtp = { paths = { vim.fn.fnamemodify(vim.env.VIMRUNTIME, ':h:h:h') .. '/lib/nvim' } } },
})

vim.api.nvim_create_autocmd('VimEnter', {
  once = true,
  callback = function()
    vim.schedule(function()
      local plugin = require('lazy.core.config').plugins['dlm-lsp']
      io.stdout:write(('lazy.nvim loaded dlm-lsp: %s\n'):format(tostring(plugin and plugin._.loaded ~= nil)))
      vim.g.dlm_lazy_loaded = plugin ~= nil and plugin._.loaded ~= nil
      dofile(repo .. '/editors/neovim/tests/test_lazy_spec.lua')
    end)
  end,
})
