// Lint, including the layering rules (Nova's N307/N311 in spirit): dependencies point one way,
// api → compute/volume services → virt drivers / storage backends.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const layer = (files, forbidden, why) => ({
  files,
  rules: {
    'no-restricted-imports': ['error', { patterns: forbidden.map((group) => ({ group: [group], message: why })) }],
  },
});

export default tseslint.config(
  { ignores: ['scratch/**', 'dist/**', 'node_modules/**', '.lab/**', '.lab-cache/**', 'coverage/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', AbortSignal: 'readonly', fetch: 'readonly', Response: 'readonly', structuredClone: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  layer(['src/virt/**/*.ts'], ['**/api/**', '**/db/**', '**/compute/**', '**/volume/**', '**/app.js', '**/cli.js', '**/config.js'],
    'virt drivers never import the API, the database, the services or the config'),
  layer(['src/virt/fake/**/*.ts'], ['**/libvirt/**'], 'one virt driver never imports another'),
  layer(['src/virt/libvirt/**/*.ts'], ['**/fake/**'], 'one virt driver never imports another'),
  layer(['src/volume/backends/**/*.ts'], ['**/api/**', '**/db/**', '**/compute/**', '**/app.js', '**/cli.js', '**/config.js'],
    'storage backends never import the API, the database, compute or the config'),
  layer(['src/compute/**/*.ts', 'src/volume/**/*.ts', 'src/db/**/*.ts', 'src/auth/**/*.ts'], ['**/api/**', '**/app.js', '**/cli.js', '**/cli/**'],
    'services and stores never import the HTTP layer or the CLI'),
  layer(['src/api/**/*.ts'], ['**/virt/fake/**', '**/virt/libvirt/**', '**/volume/backends/**', '**/db/sqlite.js'],
    'the API reaches drivers, backends and the database only through the services and interfaces'),
  {
    files: ['src/**/*.ts'],
    ignores: ['src/config.ts', 'src/cli.ts', 'src/lab/**'],
    rules: {
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'read configuration in src/config.ts and pass it in' }],
    },
  },
);
